use super::*;
use crate::server::Server;

#[test]
fn connection_failures_are_told_from_server_errors() {
    use strata_proto::v1::ErrorReason;
    assert!(is_connection_error(&tonic::Status::unavailable(
        "tcp connect error"
    )));
    assert!(is_connection_error(&tonic::Status::unknown(
        "transport error"
    )));
    assert!(is_connection_error(&tonic::Status::internal(
        "h2 protocol error: connection reset"
    )));
    // A server's own answer carries an ErrorDetail, even with UNAVAILABLE.
    let busy = ErrorDetail::new(ErrorReason::ServerBusy)
        .into_status_with_code(tonic::Code::Unavailable, "busy");
    assert!(!is_connection_error(&busy));
    assert!(!is_connection_error(&tonic::Status::aborted("conflict")));
    assert!(!is_connection_error(&tonic::Status::unknown("boom")));
    assert!(!is_connection_error(&tonic::Status::invalid_argument(
        "connection"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fail_over_and_writes_are_not_sent_again() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Server::start(crate::server::tests::test_config(a.path()))
        .await
        .unwrap();
    let second = Server::start(crate::server::tests::test_config(b.path()))
        .await
        .unwrap();
    let endpoints = [
        first.grpc_addr().to_string(),
        second.grpc_addr().to_string(),
    ];
    let options = ClientOptions {
        endpoints: Some(endpoints.join(",")),
        timeout: 2,
        ..ClientOptions::for_endpoint("unused:1")
    };
    // The second node holds the key; the first one is tried first and answers first.
    let mut on_second = Clients::connect_one(&endpoints[1], Duration::from_secs(2))
        .await
        .unwrap();
    put(&mut on_second, &options, "k", "v", &mut Vec::new())
        .await
        .unwrap();
    let mut c = Clients::connect(&options).await.unwrap();
    assert_eq!(c.endpoint(), endpoints[0]);
    assert_eq!(
        get(&mut c, &options, "k", &mut Vec::new()).await.unwrap(),
        ExitStatus::NotFound
    );

    first.shutdown().await.unwrap();
    // A write whose connection fails is reported, not resent elsewhere.
    let err = put(&mut c, &options, "w", "1", &mut Vec::new())
        .await
        .unwrap_err();
    let text = err.error.to_string();
    assert!(text.contains("may or may not have been applied"), "{text}");
    assert!(text.contains(&endpoints[0]), "{text}");
    assert_eq!(
        get(&mut on_second, &options, "w", &mut Vec::new())
            .await
            .unwrap(),
        ExitStatus::NotFound,
        "the write was not sent to the second node"
    );
    // A read moves to the next endpoint and is asked again there.
    let mut out = Vec::new();
    assert_eq!(
        get(&mut c, &options, "k", &mut out).await.unwrap(),
        ExitStatus::Ok
    );
    assert_eq!(out, b"v\n");
    assert_eq!(c.endpoint(), endpoints[1]);

    // None reachable: a clear error naming them all.
    second.shutdown().await.unwrap();
    let err = Clients::connect(&options).await.unwrap_err().to_string();
    assert!(
        err.contains("cannot reach a Strata server at any of"),
        "{err}"
    );
    assert!(c.failover().await.is_err());
}
