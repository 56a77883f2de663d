use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn members(list: &str) -> Vec<Member> {
    parse_list(list).unwrap()
}

fn resolve(node_id: u64, s: &ClusterSettings) -> Result<ClusterConfig, String> {
    ClusterConfig::resolve(node_id, addr("0.0.0.0:7379"), addr("0.0.0.0:7380"), s)
        .map_err(|e| e.to_string())
}

const THREE: &str = "1=strata-0.strata-peers.ns.svc:20170,2=strata-1.strata-peers.ns.svc:20170,3=strata-2.strata-peers.ns.svc:20170";

#[test]
fn addresses_parse_dns_names_and_refuse_nonsense() {
    let a: PeerAddr = "strata-0.strata-peers.ns.svc:20170".parse().unwrap();
    assert_eq!(a.host(), "strata-0.strata-peers.ns.svc");
    assert_eq!(a.port(), 20170);
    assert_eq!(
        a.with_port(7379).as_str(),
        "strata-0.strata-peers.ns.svc:7379"
    );
    let v6: PeerAddr = "[::1]:5".parse().unwrap();
    assert_eq!((v6.host(), v6.port()), ("[::1]", 5));
    for bad in [
        "strata-0",
        "host:0",
        "host:99999",
        ":20170",
        "a b:1",
        "0.0.0.0:20170",
        "[::]:1",
        "[nope]:1",
    ] {
        assert!(bad.parse::<PeerAddr>().is_err(), "{bad} parsed");
    }
}

#[test]
fn members_parse_from_the_flag_syntax() {
    let m = members(THREE);
    assert_eq!(m.len(), 3);
    assert_eq!(m[2].id, 3);
    assert_eq!(
        m[2].raft_addr.as_str(),
        "strata-2.strata-peers.ns.svc:20170"
    );
    assert_eq!(
        String::from(m[0].clone()),
        "1=strata-0.strata-peers.ns.svc:20170"
    );
    assert!(parse_list::<Member>("x=a:1")
        .unwrap_err()
        .contains("not a number"));
    assert!(parse_list::<Member>("1:a:1").is_err());
    assert_eq!(parse_list::<Member>(" , ").unwrap(), vec![]);
}

#[test]
fn no_members_and_no_join_is_a_single_node() {
    let c = ClusterConfig::resolve(
        1,
        addr("127.0.0.1:7379"),
        addr("127.0.0.1:7380"),
        &ClusterSettings::default(),
    )
    .unwrap();
    assert_eq!(c.bootstrap, Bootstrap::Single);
    assert_eq!(c.advertise_raft_addr.as_str(), "127.0.0.1:20170");
    assert_eq!(c.advertise_grpc_addr.as_str(), "127.0.0.1:7379");
    assert_eq!(c.configured_members().len(), 1);
    // Port 0: the bound port replaces it.
    let s = ClusterSettings {
        raft_addr: addr("127.0.0.1:0"),
        ..ClusterSettings::default()
    };
    let c = ClusterConfig::resolve(1, addr("127.0.0.1:0"), addr("127.0.0.1:0"), &s).unwrap();
    let c = c.with_bound_raft_addr(addr("127.0.0.1:4242"));
    assert_eq!(c.advertise_raft_addr.as_str(), "127.0.0.1:4242");
    assert_eq!(c.raft_listen, addr("127.0.0.1:4242"));
}

#[test]
fn an_initial_member_bootstraps_and_advertises_its_member_address() {
    let s = ClusterSettings {
        raft_addr: addr("0.0.0.0:20170"),
        initial_members: members(THREE),
        ..ClusterSettings::default()
    };
    let c = resolve(2, &s).unwrap();
    let Bootstrap::Initial { members } = &c.bootstrap else {
        panic!("{:?}", c.bootstrap);
    };
    assert_eq!(members.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        c.advertise_raft_addr.as_str(),
        "strata-1.strata-peers.ns.svc:20170"
    );
    // gRPC listens on 0.0.0.0: clients dial the same host at the gRPC port.
    assert_eq!(
        c.advertise_grpc_addr.as_str(),
        "strata-1.strata-peers.ns.svc:7379"
    );
    assert_eq!(c.configured_members().len(), 3);
}

#[test]
fn a_node_outside_the_initial_members_joins_through_them() {
    let s = ClusterSettings {
        raft_addr: addr("0.0.0.0:20170"),
        advertise_raft_addr: Some("strata-3.strata-peers.ns.svc:20170".parse().unwrap()),
        initial_members: members(THREE),
        ..ClusterSettings::default()
    };
    let c = resolve(4, &s).unwrap();
    let Bootstrap::Join { seeds } = &c.bootstrap else {
        panic!("{:?}", c.bootstrap);
    };
    assert_eq!(seeds.len(), 3);
    assert_eq!(seeds[0].as_str(), "strata-0.strata-peers.ns.svc:20170");
    // Without an advertised address it cannot be dialled back.
    let err = resolve(
        4,
        &ClusterSettings {
            advertise_raft_addr: None,
            ..s.clone()
        },
    )
    .unwrap_err();
    assert!(
        err.contains("cluster.advertise_raft_addr is needed"),
        "{err}"
    );
    // Explicit join addresses win over the members' ones.
    let c = resolve(
        4,
        &ClusterSettings {
            join: parse_list("strata-1.strata-peers.ns.svc:20170").unwrap(),
            ..s
        },
    )
    .unwrap();
    assert_eq!(
        c.bootstrap,
        Bootstrap::Join {
            seeds: parse_list("strata-1.strata-peers.ns.svc:20170").unwrap()
        }
    );
}

#[test]
fn invalid_cluster_settings_are_refused_with_a_clear_reason() {
    let base = ClusterSettings {
        raft_addr: addr("0.0.0.0:20170"),
        ..ClusterSettings::default()
    };
    let cases: Vec<(u64, ClusterSettings, &str)> = vec![
        (0, base.clone(), "node_id = 0"),
        (
            1,
            ClusterSettings {
                initial_members: members("0=a:1,1=b:1"),
                ..base.clone()
            },
            "node ids start at 1",
        ),
        (
            1,
            ClusterSettings {
                initial_members: members("1=a:1,1=b:1"),
                ..base.clone()
            },
            "node id 1 is listed twice",
        ),
        (
            1,
            ClusterSettings {
                initial_members: members("1=a:1,2=A:1"),
                ..base.clone()
            },
            "nodes 1 and 2 have the same address",
        ),
        (
            1,
            ClusterSettings {
                initial_members: members("1=a:1,2=b:1"),
                join: parse_list("c:1").unwrap(),
                ..base.clone()
            },
            "both cluster.initial_members (which lists node 1) and cluster.join",
        ),
        (
            1,
            ClusterSettings {
                join: parse_list("c:1,c:1").unwrap(),
                advertise_raft_addr: Some("me:1".parse().unwrap()),
                ..base.clone()
            },
            "cluster.join: c:1 is listed twice",
        ),
        (
            1,
            ClusterSettings {
                join: parse_list("c:1,me:1").unwrap(),
                advertise_raft_addr: Some("me:1".parse().unwrap()),
                ..base.clone()
            },
            "own address me:1",
        ),
        (
            1,
            ClusterSettings {
                initial_members: members("1=a:1,2=b:1"),
                advertise_raft_addr: Some("c:1".parse().unwrap()),
                ..base.clone()
            },
            "lists node 1 at a:1: they must agree",
        ),
        (
            3,
            ClusterSettings {
                initial_members: members("1=a:1,2=b:1"),
                advertise_raft_addr: Some("b:1".parse().unwrap()),
                ..base.clone()
            },
            "as node 2, but this node is node 3",
        ),
        (
            1,
            ClusterSettings {
                raft_addr: addr("0.0.0.0:7379"),
                ..base.clone()
            },
            "must differ from grpc_addr",
        ),
        (
            1,
            ClusterSettings {
                raft_addr: addr("127.0.0.1:7380"),
                ..base.clone()
            },
            "must differ from http_addr",
        ),
    ];
    for (id, settings, expected) in cases {
        let err = resolve(id, &settings).expect_err(expected);
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

#[test]
fn the_node_id_comes_from_the_statefulset_ordinal() {
    assert_eq!(node_id_from_hostname("strata-0").unwrap(), 1);
    assert_eq!(node_id_from_hostname("strata-2").unwrap(), 3);
    assert_eq!(node_id_from_hostname("my-db-cluster-41\n").unwrap(), 42);
    assert_eq!(
        node_id_from_hostname("strata-2.strata-peers.ns.svc.cluster.local").unwrap(),
        3
    );
    for bad in [
        "strata",
        "strata-",
        "strata-x",
        "-",
        "",
        "strata-1a",
        "strata-99999999999999999999",
    ] {
        let err = node_id_from_hostname(bad).expect_err(bad).to_string();
        assert!(err.contains("cluster.node_id_from_hostname"), "{err}");
    }
}

#[test]
fn the_section_parses_from_yaml() {
    let yaml = "raft_addr: 0.0.0.0:20170\nadvertise_raft_addr: strata-0.p.ns.svc:20170\ninitial_members:\n  - 1=strata-0.p.ns.svc:20170\n  - 2=strata-1.p.ns.svc:20170\njoin: []\n";
    let s: ClusterSettings = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(s.initial_members.len(), 2);
    assert_eq!(s.advertise_raft_addr.unwrap().port(), 20170);
    let err = serde_yaml::from_str::<ClusterSettings>("initial_members: [\"1=nohost\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not host:port"), "{err}");
    assert!(serde_yaml::from_str::<ClusterSettings>("raft_adr: 1.2.3.4:5\n").is_err());
    // What the file says, written back, reads the same.
    let back: ClusterSettings = serde_yaml::from_str(
        &serde_yaml::to_string(&ClusterSettings {
            initial_members: members(THREE),
            ..ClusterSettings::default()
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(back.initial_members, members(THREE));
}
