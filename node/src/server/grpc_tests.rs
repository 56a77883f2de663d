//! Over the wire on 127.0.0.1: the standard health service and server reflection, driven
//! through their own generated clients as a probe or grpcurl would.

use std::time::Duration;

use prost::Message as _;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1 as refl;
use tonic_reflection::pb::v1alpha as refl_alpha;

use super::grpc::SERVICE_NAMES;
use super::tests::{channel, test_config};
use super::Server;

/// Bounds every wait on the server, so that a regression fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

fn check_request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_serves_the_server_and_each_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = Server::start(test_config(dir.path())).await.expect("start");
    let mut health = HealthClient::new(channel(&handle).await);
    for name in std::iter::once("").chain(SERVICE_NAMES) {
        let r = health
            .check(check_request(name))
            .await
            .unwrap_or_else(|s| panic!("check {name:?}: {s:?}"))
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{name:?}");
    }
    let unknown = health
        .check(check_request("strata.v1.NoSuchService"))
        .await
        .expect_err("an unknown service");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let unknown = health
        .watch(check_request("strata.v1.NoSuchService"))
        .await
        .expect_err("an unknown service");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    handle.shutdown().await.expect("shutdown");
}

/// A watcher sees SERVING, then NOT_SERVING when shutdown begins, then a clean end of the
/// stream: the open Watch does not hold the drain (it would be cut off, an error, after the
/// drain timeout otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_sees_not_serving_on_shutdown_then_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = Server::start(test_config(dir.path())).await.expect("start");
    let mut health = HealthClient::new(channel(&handle).await);
    let mut streams = Vec::new();
    for name in ["", SERVICE_NAMES[0]] {
        let mut stream = health
            .watch(check_request(name))
            .await
            .expect("watch")
            .into_inner();
        let first = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("the current status in time")
            .expect("a message")
            .expect("not the end");
        assert_eq!(first.status, ServingStatus::Serving as i32, "{name:?}");
        streams.push((name, stream));
    }

    let shutdown = tokio::spawn(handle.shutdown());
    for (name, mut stream) in streams {
        let change = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("the change in time")
            .expect("a message, not an error")
            .expect("not the end yet");
        assert_eq!(change.status, ServingStatus::NotServing as i32, "{name:?}");
        let end = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("the end in time");
        assert!(
            matches!(end, Ok(None)),
            "{name:?}: a clean end, got {end:?}"
        );
    }
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown in time")
        .expect("task")
        .expect("shutdown");
}

/// One v1 reflection request, one answer (an unknown name is a `NOT_FOUND` status).
async fn reflect(
    client: &mut refl::server_reflection_client::ServerReflectionClient<tonic::transport::Channel>,
    request: refl::server_reflection_request::MessageRequest,
) -> Result<refl::server_reflection_response::MessageResponse, tonic::Status> {
    let request = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let answer = tokio::time::timeout(PATIENCE, answers.message())
        .await
        .expect("an answer in time")?
        .expect("one answer");
    Ok(answer.message_response.expect("a response body"))
}

/// The file descriptors of a v1 reflection answer.
async fn descriptors(
    client: &mut refl::server_reflection_client::ServerReflectionClient<tonic::transport::Channel>,
    request: refl::server_reflection_request::MessageRequest,
) -> Vec<prost_types::FileDescriptorProto> {
    let refl::server_reflection_response::MessageResponse::FileDescriptorResponse(files) =
        reflect(client, request)
            .await
            .expect("an answer, not an error")
    else {
        panic!("not a file descriptor answer");
    };
    files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).expect("a descriptor"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_services_and_resolves_symbols() {
    use refl::server_reflection_request::MessageRequest;
    use refl::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().expect("tempdir");
    let handle = Server::start(test_config(dir.path())).await.expect("start");
    let ch = channel(&handle).await;
    let mut client = refl::server_reflection_client::ServerReflectionClient::new(ch.clone());

    let MessageResponse::ListServicesResponse(list) =
        reflect(&mut client, MessageRequest::ListServices(String::new()))
            .await
            .expect("an answer, not an error")
    else {
        panic!("not a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in SERVICE_NAMES.into_iter().chain([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ]) {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    // A service, a method and a message each resolve to the file that declares them; the
    // files it imports resolve by name (how grpcurl assembles what it needs to build requests).
    for (symbol, file, service) in [
        ("strata.v1.Kv", "strata/v1/kv.proto", Some("Kv")),
        ("strata.v1.Txn.Commit", "strata/v1/txn.proto", Some("Txn")),
        ("strata.v1.Admin", "strata/v1/admin.proto", Some("Admin")),
        ("strata.v1.ErrorDetail", "strata/v1/common.proto", None),
    ] {
        let files = descriptors(
            &mut client,
            MessageRequest::FileContainingSymbol(symbol.to_string()),
        )
        .await;
        let declaring = files
            .iter()
            .find(|f| f.name() == file)
            .unwrap_or_else(|| panic!("{symbol}: {file} not sent"));
        assert_eq!(declaring.package(), "strata.v1");
        if let Some(service) = service {
            assert!(
                declaring.service.iter().any(|s| s.name() == service),
                "{symbol}: {file} does not declare {service}"
            );
        }
        for import in &declaring.dependency {
            let imported =
                descriptors(&mut client, MessageRequest::FileByFilename(import.clone())).await;
            assert!(
                imported.iter().any(|f| f.name() == import),
                "{symbol}: the import {import} does not resolve"
            );
        }
    }
    let kv = descriptors(
        &mut client,
        MessageRequest::FileContainingSymbol("strata.v1.Kv".to_string()),
    )
    .await;
    assert!(
        kv.iter()
            .any(|f| f.dependency.iter().any(|d| d == "strata/v1/common.proto")),
        "kv.proto imports common.proto"
    );

    let unknown = reflect(
        &mut client,
        MessageRequest::FileContainingSymbol("strata.v1.NoSuchThing".to_string()),
    )
    .await
    .expect_err("an unknown symbol resolved");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    // v1alpha, which older grpcurl and clients speak, answers the same list.
    let mut alpha = refl_alpha::server_reflection_client::ServerReflectionClient::new(ch);
    let request = refl_alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            refl_alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let answer = tokio::time::timeout(PATIENCE, async {
        alpha
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("v1alpha reflection call")
            .into_inner()
            .message()
            .await
    })
    .await
    .expect("an answer in time")
    .expect("an answer, not an error")
    .expect("one answer");
    let Some(refl_alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list");
    };
    for expected in SERVICE_NAMES {
        assert!(
            list.service.iter().any(|s| s.name == expected),
            "v1alpha: {expected} missing"
        );
    }
    handle.shutdown().await.expect("shutdown");
}
