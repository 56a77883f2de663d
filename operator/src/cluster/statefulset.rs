//! The StatefulSet that runs a cluster's nodes.
//!
//! ```text
//!   pod <cluster>-<i>            node id i+1, peers <cluster>-<j>.<cluster>-peers.<ns>.svc
//!     container strata-node      --config /etc/strata/node.yaml --node-id-from-hostname
//!       env STRATA_HOSTNAME              $(POD_NAME)
//!           STRATA_ADVERTISE_RAFT_ADDR   $(POD_NAME).<cluster>-peers.<ns>.svc:20170
//!           STRATA_ADVERTISE_GRPC_ADDR   $(POD_NAME).<cluster>-peers.<ns>.svc:7379
//!           STRATA_INITIAL_MEMBERS       1=<cluster>-0.<cluster>-peers.<ns>.svc:20170,…
//!       ports grpc 7379, http 7380, raft 20170
//!       /var/lib/strata  <-  PVC data-<cluster>-<i> (volumeClaimTemplate)
//!       /etc/strata      <-  ConfigMap <cluster>-config
//!     probes on :7380            startup + liveness /healthz, readiness /readyz
//! ```
//!
//! - Identity: the node id is the pod's ordinal plus one (Raft ids start at 1): the node
//!   derives it from its host name, given explicitly as the pod's name (downward API), so
//!   `demo-3` is node 4. No shell is involved. The node records the id in its volume and
//!   refuses to start with another.
//! - Membership: the initial members are the first `replicationFactor` pods, named by their
//!   headless-Service DNS names. Every pod gets the same list: a pod among them bootstraps
//!   the cluster on an empty volume, a pod beyond them (a scale-out) joins through them. The
//!   list depends only on `replicationFactor`, so a scale-out does not change the template.
//!   Each pod advertises its own DNS name for Raft and gRPC.
//! - Pods start in parallel (`podManagementPolicy: Parallel`): the initial members must all
//!   be up to form a quorum, which ordered start-up would deadlock on.
//! - `replicas` is an argument, not `spec.replicas`: the reconcile's plan decides it (a
//!   scale-in keeps the running size until its drain is done).
//! - Pods prefer distinct Kubernetes nodes (soft anti-affinity: a one-node test cluster still
//!   schedules), run as a non-root user with a read-only root file system and no
//!   capabilities, and get 60 s to shut down (the node drains its listeners on SIGTERM).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config_map::{config_hash, node_config_yaml};
use super::names::{
    owned_meta, ClusterNames, CONFIG_DIR, CONFIG_HASH_ANNOTATION, CONFIG_KEY, DATA_DIR,
    DATA_VOLUME, GRPC_PORT, HTTP_PORT, RAFT_PORT,
};
use crate::crd::StrataCluster;
use crate::error::Result;

/// The user and group the node runs as (any non-zero id works; the image uses this one).
pub const NODE_UID: i64 = 10001;
/// Seconds a pod gets between SIGTERM and SIGKILL.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;

/// The node's start command: the id from the pod's name, the shared settings from the file.
fn start_command() -> Vec<String> {
    vec![
        "strata-node".to_owned(),
        "--config".to_owned(),
        format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        "--node-id-from-hostname".to_owned(),
    ]
}

/// The pod's environment: its name, and the per-pod and per-cluster node settings.
fn environment(cluster: &StrataCluster, names: &ClusterNames) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    };
    let own = names.own_dns_template();
    vec![
        // First: the values below refer to it.
        EnvVar {
            name: "POD_NAME".to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        value("STRATA_HOSTNAME", "$(POD_NAME)".to_owned()),
        value("STRATA_ADVERTISE_RAFT_ADDR", format!("{own}:{RAFT_PORT}")),
        value("STRATA_ADVERTISE_GRPC_ADDR", format!("{own}:{GRPC_PORT}")),
        value(
            "STRATA_INITIAL_MEMBERS",
            names.initial_members(cluster.spec.replication_factor.max(1)),
        ),
    ]
}

/// The StatefulSet `<cluster>` running `replicas` nodes.
pub fn build(cluster: &StrataCluster, replicas: i32) -> Result<StatefulSet> {
    let names = ClusterNames::of(cluster)?;
    let config_text = node_config_yaml(cluster)?;
    Ok(StatefulSet {
        metadata: owned_meta(cluster, &names, names.statefulset())?,
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(names.peer_service()),
            pod_management_policy: Some("Parallel".to_owned()),
            selector: LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..RollingUpdateStatefulSetStrategy::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names.labels()),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash(&config_text),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(cluster, &names)),
            },
            volume_claim_templates: Some(vec![volume_claim(cluster, &names)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

fn pod_spec(cluster: &StrataCluster, names: &ClusterNames) -> PodSpec {
    PodSpec {
        containers: vec![container(cluster, names)],
        volumes: Some(vec![Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_UID),
            run_as_group: Some(NODE_UID),
            fs_group: Some(NODE_UID),
            fs_group_change_policy: Some("OnRootMismatch".to_owned()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        affinity: Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            topology_key: "kubernetes.io/hostname".to_owned(),
                            label_selector: Some(LabelSelector {
                                match_labels: Some(names.selector_labels()),
                                ..LabelSelector::default()
                            }),
                            ..PodAffinityTerm::default()
                        },
                    },
                ]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        }),
        ..PodSpec::default()
    }
}

fn container(cluster: &StrataCluster, names: &ClusterNames) -> Container {
    let spec = &cluster.spec;
    let http_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    Container {
        name: "strata-node".to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(start_command()),
        env: Some(environment(cluster, names)),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".to_owned()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".to_owned()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("raft".to_owned()),
                container_port: RAFT_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        // Startup allows 5 minutes of WAL replay before liveness may restart the pod.
        startup_probe: Some(http_probe("/healthz", 5, 60)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        resources: spec.resources.clone(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.to_owned(),
                mount_path: DATA_DIR.to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "config".to_owned(),
                mount_path: CONFIG_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The claim template; its labels let the cleanup find the PVCs of a deleted cluster.
fn volume_claim(cluster: &StrataCluster, names: &ClusterNames) -> PersistentVolumeClaim {
    let storage = &cluster.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(names.labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}
