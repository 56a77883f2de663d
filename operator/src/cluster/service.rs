//! The two Services of a cluster.
//!
//! - `<cluster>-peers`, headless: gives pod `<cluster>-<i>` the stable name
//!   `<cluster>-<i>.<cluster>-peers.<namespace>.svc`, with the gRPC, HTTP and Raft ports.
//!   It publishes pods before they are ready, because nodes must reach each other to become
//!   ready at all.
//! - `<cluster>`, a ClusterIP Service over the ready pods: what clients connect to (any node
//!   is a gateway), plus the HTTP port for metrics scrapers.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{owned_meta, ClusterNames, GRPC_PORT, HTTP_PORT, RAFT_PORT};
use crate::crd::StrataCluster;
use crate::error::Result;

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// What clients use: gRPC and HTTP.
fn ports() -> Vec<ServicePort> {
    vec![port("grpc", GRPC_PORT), port("http", HTTP_PORT)]
}

/// The headless Service `<cluster>-peers`.
pub fn build_peer(cluster: &StrataCluster) -> Result<Service> {
    let names = ClusterNames::of(cluster)?;
    Ok(Service {
        metadata: owned_meta(cluster, &names, names.peer_service())?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names.selector_labels()),
            // Peers also dial each other's Raft port; clients never see it.
            ports: Some(
                ports()
                    .into_iter()
                    .chain([port("raft", RAFT_PORT)])
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The client Service `<cluster>`.
pub fn build_client(cluster: &StrataCluster) -> Result<Service> {
    let names = ClusterNames::of(cluster)?;
    Ok(Service {
        metadata: owned_meta(cluster, &names, names.statefulset())?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(names.selector_labels()),
            ports: Some(ports()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}
