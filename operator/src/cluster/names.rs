//! Names, labels, ports and paths shared by the builders: one place, so the Services, the
//! StatefulSet and the disruption budget always agree on what selects a cluster's pods.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::StrataCluster;
use crate::error::{Error, Result};

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "strata-operator";
/// The node's gRPC port (`grpc_addr`).
pub const GRPC_PORT: i32 = 7379;
/// The node's HTTP port (`http_addr`): `/metrics`, `/healthz`, `/readyz`.
pub const HTTP_PORT: i32 = 7380;
/// The node's internal Raft port (`cluster.raft_addr`): peers only, never clients.
pub const RAFT_PORT: i32 = 20170;
/// Where each pod mounts its volume (the node's `data_dir`).
pub const DATA_DIR: &str = "/var/lib/strata";
/// Where each pod mounts the ConfigMap.
pub const CONFIG_DIR: &str = "/etc/strata";
/// The ConfigMap key holding the node's YAML file.
pub const CONFIG_KEY: &str = "node.yaml";
/// The name of the volume claim template (PVCs are `data-<cluster>-<ordinal>`).
pub const DATA_VOLUME: &str = "data";
/// The pod template annotation carrying the hash of the node configuration, so that a
/// configuration change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "strata.dev/config-hash";

/// The names of one cluster's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    /// The `StrataCluster`'s name: also the StatefulSet, client Service and PDB.
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
}

impl ClusterNames {
    /// The names for `cluster`.
    pub fn of(cluster: &StrataCluster) -> Result<ClusterNames> {
        Ok(ClusterNames {
            cluster: cluster
                .metadata
                .name
                .clone()
                .ok_or(Error::MissingField("metadata.name"))?,
            namespace: cluster
                .namespace()
                .ok_or(Error::MissingField("metadata.namespace"))?,
        })
    }

    /// The StatefulSet (and client Service, and PodDisruptionBudget).
    pub fn statefulset(&self) -> String {
        self.cluster.clone()
    }

    /// The headless Service that gives each pod a stable DNS name.
    pub fn peer_service(&self) -> String {
        format!("{}-peers", self.cluster)
    }

    /// The ConfigMap with the node configuration.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.cluster)
    }

    /// The stable DNS name of the pod with StatefulSet ordinal `ordinal`.
    pub fn peer_dns(&self, ordinal: i32) -> String {
        format!(
            "{}-{ordinal}.{}.{}.svc",
            self.cluster,
            self.peer_service(),
            self.namespace
        )
    }

    /// The initial members of the cluster, as `strata-node --initial-members` takes them:
    /// `<id>=<pod DNS name>:<raft port>` for the first `count` ordinals, comma-separated.
    pub fn initial_members(&self, count: i32) -> String {
        (0..count)
            .map(|i| format!("{}={}:{RAFT_PORT}", node_id(i), self.peer_dns(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A pod's own DNS name, with `$(POD_NAME)` for the pod's name (Kubernetes expands it in
    /// environment values from the variable of that name).
    pub fn own_dns_template(&self) -> String {
        format!("$(POD_NAME).{}.{}.svc", self.peer_service(), self.namespace)
    }

    /// The gRPC addresses of the first `replicas` pods, in ordinal order.
    pub fn peer_addresses(&self, replicas: i32) -> Vec<String> {
        (0..replicas)
            .map(|i| format!("{}:{GRPC_PORT}", self.peer_dns(i)))
            .collect()
    }

    /// The labels that select this cluster's pods.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "strata".to_owned()),
            (
                "app.kubernetes.io/instance".to_owned(),
                self.cluster.clone(),
            ),
            ("app.kubernetes.io/component".to_owned(), "node".to_owned()),
        ])
    }

    /// The selector as a string, for the scale subresource.
    pub fn selector_string(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The labels of every object the operator creates for this cluster.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
        labels
    }
}

/// The node id of the pod with StatefulSet ordinal `ordinal` (Raft ids start at 1).
pub fn node_id(ordinal: i32) -> i64 {
    i64::from(ordinal) + 1
}

/// The ordinal in a StatefulSet pod's name (`demo-3` -> 3).
pub fn ordinal_of(pod_name: &str) -> Option<i32> {
    pod_name.rsplit_once('-')?.1.parse().ok()
}

/// The metadata of an object named `name` that `cluster` owns (so it is deleted with it).
pub fn owned_meta(
    cluster: &StrataCluster,
    names: &ClusterNames,
    name: String,
) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels()),
        owner_references: Some(vec![owner_ref(cluster)?]),
        ..ObjectMeta::default()
    })
}

fn owner_ref(cluster: &StrataCluster) -> Result<OwnerReference> {
    cluster
        .metadata
        .uid
        .as_ref()
        .ok_or(Error::MissingField("metadata.uid"))?;
    cluster
        .controller_owner_ref(&())
        .map(|r| OwnerReference {
            block_owner_deletion: Some(true),
            ..r
        })
        .ok_or(Error::MissingField("metadata.name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator's flags are the node's: what the StatefulSet passes parses and resolves
    /// in strata-node's own configuration code, for every pod of a scaled-out cluster.
    #[test]
    fn the_pod_settings_resolve_in_the_node() {
        use strata::server::{Bootstrap, ConfigArgs, NodeConfig};
        let names = ClusterNames {
            cluster: "demo".into(),
            namespace: "db".into(),
        };
        for ordinal in 0..5 {
            let pod = format!("demo-{ordinal}");
            let own = names.own_dns_template().replace("$(POD_NAME)", &pod);
            let mut config = NodeConfig::from_yaml(
                &format!("grpc_addr: 0.0.0.0:{GRPC_PORT}\nhttp_addr: 0.0.0.0:{HTTP_PORT}\ncluster:\n  raft_addr: 0.0.0.0:{RAFT_PORT}\n"),
                std::path::Path::new("node.yaml"),
            )
            .unwrap();
            config.apply(&ConfigArgs {
                node_id_from_hostname: true,
                hostname: Some(pod.clone()),
                advertise_raft_addr: Some(format!("{own}:{RAFT_PORT}").parse().unwrap()),
                advertise_grpc_addr: Some(format!("{own}:{GRPC_PORT}").parse().unwrap()),
                initial_members: Some(names.initial_members(3).parse().unwrap()),
                ..ConfigArgs::default()
            });
            config.resolve_node_id().unwrap();
            assert_eq!(config.node_id, node_id(ordinal) as u64);
            let cluster = config.cluster_config().unwrap();
            match cluster.bootstrap {
                Bootstrap::Initial { members } if ordinal < 3 => assert_eq!(members.len(), 3),
                Bootstrap::Join { seeds } if ordinal >= 3 => assert_eq!(seeds.len(), 3),
                other => panic!("pod {pod}: {other:?}"),
            }
        }
    }

    #[test]
    fn ordinals_and_ids() {
        assert_eq!(ordinal_of("demo-0"), Some(0));
        assert_eq!(ordinal_of("my-db-12"), Some(12));
        assert_eq!(ordinal_of("demo"), None);
        assert_eq!(ordinal_of("demo-x"), None);
        assert_eq!(node_id(0), 1);
    }

    #[test]
    fn peers_are_headless_service_names() {
        let names = ClusterNames {
            cluster: "demo".into(),
            namespace: "db".into(),
        };
        assert_eq!(
            names.peer_addresses(2),
            [
                "demo-0.demo-peers.db.svc:7379",
                "demo-1.demo-peers.db.svc:7379"
            ]
        );
        assert_eq!(
            names.initial_members(3),
            "1=demo-0.demo-peers.db.svc:20170,2=demo-1.demo-peers.db.svc:20170,3=demo-2.demo-peers.db.svc:20170"
        );
        assert_eq!(names.own_dns_template(), "$(POD_NAME).demo-peers.db.svc");
        assert_eq!(
            names.selector_string(),
            "app.kubernetes.io/component=node,app.kubernetes.io/instance=demo,app.kubernetes.io/name=strata"
        );
    }
}
