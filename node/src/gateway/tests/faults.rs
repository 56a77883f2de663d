//! Gateways under faults: leader changes around range locks, lost replies settled through
//! the primary, refused and unreachable leaders, batched timestamps, GC placement and
//! one-phase commits and blind writes (D157) at a remote leader.

use super::*;

#[test]
fn a_leader_change_between_range_locks_and_commit_fails_the_commit_with_nothing_committed() {
    let c = three();
    let (a, b) = (c.node(1), c.node(2));
    // Right after the range locks are registered, the leader is in a new term (it lost
    // its lead and regained it: another leader may have accepted writes meanwhile).
    let writer = Arc::clone(&a.writer);
    a.hook.after.lock().insert(
        "lock_ranges",
        Box::new(move || {
            writer.term.fetch_add(1, Ordering::SeqCst);
        }),
    );
    let t = b.begin_serializable();
    assert!(b
        .mgr
        .scan(t, b"r/", Some(b"r0"), 10, false)
        .unwrap()
        .is_empty());
    b.mgr.write(t, b"w", Some(b"1")).unwrap();
    let r = b.mgr.commit(t);
    assert!(
        matches!(
            r,
            Err(TxnError::Conflict {
                kind: ConflictKind::RangeLocked,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(r.unwrap_err().is_retryable());
    assert_eq!(a.stored(b"w"), None, "nothing committed");
    assert_eq!(
        a.storage.lock_holder(b"w").unwrap(),
        None,
        "rolled back: nobody waits out its locks"
    );
    assert_eq!(a.service.calls("lock_ranges"), 1);
    // Run again with a stable leader: it commits.
    let t = b.begin_serializable();
    assert!(b
        .mgr
        .scan(t, b"r/", Some(b"r0"), 10, false)
        .unwrap()
        .is_empty());
    b.mgr.write(t, b"w", Some(b"2")).unwrap();
    assert!(b.mgr.commit(t).unwrap().is_some());
    assert_eq!(a.stored(b"w"), Some(b"2".to_vec()));
}

#[test]
fn the_guard_refuses_range_locks_of_another_term_or_another_leader() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    let lease = Duration::from_secs(60);
    let owner = a.local_tso.get_timestamp().unwrap();
    let opts = PrewriteOptions {
        primary: b"g".to_vec(),
        ttl_ms: HOUR_MS,
        min_commit_ts: owner + 1,
        coordinator: None,
    };
    let put = [Mutation::Put(b"g".to_vec(), b"1".to_vec())];
    let range = [(b"q/".to_vec(), Some(b"q0".to_vec()))];
    // Registered in term 1, committing in term 2: refused, nothing written.
    let term = a.storage.lock_ranges(owner, &range, lease).unwrap();
    a.storage.prewrite(&put, &opts, owner).unwrap();
    a.writer.term.store(term + 1, Ordering::SeqCst);
    let ts = a.local_tso.get_timestamp().unwrap();
    assert!(matches!(
        a.storage
            .commit_guarded(&[b"g".to_vec()], owner, ts, Some(term)),
        Err(MvccError::RangeLocksLost { .. })
    ));
    assert_eq!(a.storage.lock_holder(b"g").unwrap(), Some(owner));
    // A leader that never saw the registration (another node) refuses too.
    b.storage.prewrite(&put, &opts, owner).unwrap();
    assert!(matches!(
        b.storage
            .commit_guarded(&[b"g".to_vec()], owner, ts, Some(term)),
        Err(MvccError::RangeLocksLost { .. })
    ));
    // Registered and committed in the same term: committed; a retry of that commit is Ok
    // even once the locks are gone (the guard only applies while the primary is locked).
    a.writer.term.store(term, Ordering::SeqCst);
    a.storage
        .commit_guarded(&[b"g".to_vec()], owner, ts, Some(term))
        .unwrap();
    a.storage.unlock_ranges(owner);
    a.storage
        .commit_guarded(&[b"g".to_vec()], owner, ts, Some(term))
        .unwrap();
    assert_eq!(a.stored(b"g"), Some(b"1".to_vec()));
}

#[test]
fn a_lost_reply_is_settled_through_the_primary_and_never_run_again() {
    let c = Cluster::start(
        2,
        TxnConfig {
            outcome_resolve_timeout: Duration::from_millis(300),
            ..TxnConfig::default()
        },
        RouterConfig {
            retry_deadline: Duration::from_millis(200),
            ..router_config()
        },
    );
    let (a, b) = (c.node(1), c.node(2));
    let write = |key: &[u8]| ExecuteRequest {
        writes: vec![(key.to_vec(), Some(b"v".to_vec()))],
        ..ExecuteRequest::default()
    };
    // The primary's commit is carried out and its reply lost: the re-sent commit finds
    // the commit record and answers Ok; the transaction is not run again.
    a.hook.drop.lock().insert("commit", 1);
    let r = b.mgr.execute(&write(b"once"), 8).unwrap();
    assert!(r.commit_ts.is_some());
    assert_eq!(a.service.calls("prewrite"), 1);
    assert_eq!(a.service.calls("commit"), 2);
    assert!(b.router.stats().resent.load(Ordering::Relaxed) >= 1);
    assert_eq!(a.stored(b"once"), Some(b"v".to_vec()));

    // Every reply lost: the outcome cannot be settled, the client is told so (not a
    // failure, not a success), and Execute does not run the transaction again.
    a.hook.drop.lock().insert("commit", u32::MAX);
    let err = b.mgr.execute(&write(b"unknown"), 8).unwrap_err();
    assert!(
        matches!(err, TxnError::Mvcc(MvccError::OutcomeUnknown(_))),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(
        a.service.calls("prewrite"),
        2,
        "one prewrite per transaction"
    );
    // It did commit (the first commit was carried out): nothing invented either way.
    assert_eq!(a.stored(b"unknown"), Some(b"v".to_vec()));
}

#[test]
fn a_lost_range_lock_reply_fails_the_commit_before_its_commit_point() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    a.hook.drop.lock().insert("lock_ranges", 1);
    let t = b.begin_serializable();
    assert!(b
        .mgr
        .scan(t, b"r/", Some(b"r0"), 10, false)
        .unwrap()
        .is_empty());
    b.mgr.write(t, b"w", Some(b"1")).unwrap();
    let r = b.mgr.commit(t);
    assert!(matches!(r, Err(TxnError::NotCommitted(_))), "{r:?}");
    assert!(r.unwrap_err().is_retryable());
    assert_eq!(a.service.calls("lock_ranges"), 1, "not re-sent");
    assert_eq!(a.service.calls("prewrite"), 0);
    wait_until("the registration whose reply was lost is released", || {
        a.storage.range_locks().is_empty()
    });
}

#[test]
fn remote_timestamps_are_fetched_in_batches() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    let gate = Arc::new(Gate::default());
    a.hook.hold.lock().insert("get_timestamps", gate.clone());
    let ask = || {
        let tso = Arc::clone(&b.tso);
        std::thread::spawn(move || tso.get_timestamp())
    };
    // The first caller's round is held at the leader...
    let first = ask();
    wait_until("the first round reached the leader", || {
        a.service.calls("get_timestamps") == 1
    });
    // ...while seven more callers queue behind it for the next round.
    let rest: Vec<_> = (0..7).map(|_| ask()).collect();
    wait_until("seven callers queue", || b.tso.queued() == 7);
    gate.open();
    let mut all: Vec<Timestamp> = std::iter::once(first)
        .chain(rest)
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert_eq!(
        a.service.calls("get_timestamps"),
        2,
        "eight callers, two calls"
    );
    assert_eq!(b.tso.rounds(), 2);
    assert_eq!(b.tso.inner().stats().remote.load(Ordering::Relaxed), 2);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 8, "every caller its own timestamp");
    // On the leader, the local oracle serves: no call.
    a.tso.get_timestamp().unwrap();
    assert_eq!(a.service.calls("get_timestamps"), 2);
}

#[test]
fn requests_for_another_shard_epoch_or_leader_are_refused_and_epochs_adopted() {
    let c = three();
    let (a, b) = (c.node(1), c.node(2));
    let addr = a.view.address(1).unwrap();
    let call = |header: pb::ShardHeader| {
        let addr = addr.clone();
        c.rt().block_on(async move {
            let mut client = pb::shard_client::ShardClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            client
                .get(pb::ShardGetRequest {
                    header: Some(header),
                    key: bytes::Bytes::from_static(b"k"),
                    ts: 1,
                    bypass: Vec::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .error
                .and_then(|e| e.kind)
        })
    };
    use pb::shard_error::Kind;
    let header = |shard_id, conf_ver| pb::ShardHeader {
        shard_id,
        conf_ver,
        version: 0,
        from_node_id: 9,
    };
    assert!(matches!(call(header(7, 0)), Some(Kind::ShardNotFound(s)) if s.shard_id == 7));
    *a.view.epoch.lock() = ShardEpoch {
        conf_ver: 5,
        version: 1,
    };
    assert!(matches!(
        call(header(1, 0)),
        Some(Kind::EpochNotMatch(e)) if e.conf_ver == 5 && e.version == 1
    ));
    // The router adopts the leader's epoch and goes on.
    b.put(b"e", b"1").unwrap();
    assert_eq!(a.stored(b"e"), Some(b"1".to_vec()));
    // A node that does not lead names the one that does.
    let b_addr = b.view.address(2).unwrap();
    let refused = c.rt().block_on(async move {
        let mut client = pb::shard_client::ShardClient::connect(format!("http://{b_addr}"))
            .await
            .unwrap();
        client
            .get(pb::ShardGetRequest {
                header: Some(header(1, 0)),
                key: bytes::Bytes::from_static(b"k"),
                ts: 1,
                bypass: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .error
            .and_then(|e| e.kind)
    });
    assert!(
        matches!(refused, Some(Kind::NotLeader(n)) if n.leader_node_id == Some(1)),
        "{refused:?}"
    );
}

#[test]
fn an_unreachable_leader_is_not_an_unknown_outcome() {
    let c = Cluster::start(
        2,
        TxnConfig::default(),
        RouterConfig {
            retry_deadline: Duration::from_millis(200),
            ..router_config()
        },
    );
    let b = c.node(2);
    // A port nobody listens on: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    b.view.book.0.lock().insert(9, closed);
    *b.view.leader.lock() = Some(9);
    let start = b.local_tso.get_timestamp().unwrap();
    let opts = PrewriteOptions {
        primary: b"k".to_vec(),
        ttl_ms: HOUR_MS,
        min_commit_ts: start + 1,
        coordinator: None,
    };
    let r = b
        .router
        .prewrite(&[Mutation::Put(b"k".to_vec(), b"v".to_vec())], &opts, start);
    assert!(
        matches!(r, Err(MvccError::NotLeader { leader: None, .. })),
        "a request that never left is no unknown outcome: {r:?}"
    );
    let r = b.tso.get_timestamp();
    assert!(matches!(r, Err(TsoError::Unavailable(_))), "{r:?}");
}

#[test]
fn gc_and_the_resolver_are_leader_work() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    assert!(a.mgr.local_leader().is_some());
    assert!(b.mgr.local_leader().is_none());
    let now = a.local_tso.get_timestamp().unwrap();
    let life = Duration::from_millis(1);
    assert_eq!(
        b.mgr.gc_tick(now, life).unwrap(),
        0,
        "a follower does not advance GC"
    );
    assert!(a.mgr.gc_tick(now, life).unwrap() > 0);
    assert_eq!(a.id, 1);
}

#[test]
fn nodes_that_disagree_on_the_leader_do_not_bounce_a_command_for_ever() {
    let c = Cluster::start(
        3,
        TxnConfig::default(),
        RouterConfig {
            retry_deadline: Duration::from_millis(200),
            ..router_config()
        },
    );
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    // Mid-election: A believes B leads, B believes A does.
    *a.view.leader.lock() = Some(2);
    *b.view.leader.lock() = Some(1);
    let r = cc.router.get(b"k", 1, &[]);
    assert!(matches!(r, Err(MvccError::NotLeader { .. })), "{r:?}");
    assert!(a.service.calls("get") >= 1 && b.service.calls("get") >= 1);
}

#[test]
fn blocking_callers_do_not_starve_a_one_worker_runtime() {
    // Sixteen synchronous commits on the blocking pool of a runtime with one worker thread,
    // each waiting on remote calls that run on that worker: all finish.
    let c = Cluster::start_with(2, TxnConfig::default(), router_config(), 1);
    let b = c.node(2);
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let mgr = Arc::clone(&b.mgr);
            c.rt().spawn_blocking(move || {
                let (t, _) = mgr.begin(Isolation::Snapshot, false)?;
                mgr.write(t, &[b'n', i], Some(b"1"))?;
                mgr.commit(t)
            })
        })
        .collect();
    for task in tasks {
        let r = c.rt().block_on(task).unwrap();
        assert!(r.unwrap().is_some());
    }
    assert_eq!(c.node(1).stored(b"n\x0f"), Some(b"1".to_vec()));
}

#[test]
fn one_phase_commits_run_at_a_remote_leader_and_settle_lost_replies() {
    let c = Cluster::start(
        2,
        TxnConfig {
            outcome_resolve_timeout: Duration::from_millis(300),
            ..TxnConfig::default()
        },
        RouterConfig {
            retry_deadline: Duration::from_millis(200),
            ..router_config()
        },
    );
    let (a, b) = (c.node(1), c.node(2));
    // The leader may take its max_ts floor from its oracle: one phase is allowed there.
    a.storage.set_ts_source(a.local_tso.clone());
    let write = |key: &[u8]| ExecuteRequest {
        writes: vec![
            (key.to_vec(), Some(b"v".to_vec())),
            ([key, b"/2"].concat(), Some(b"w".to_vec())),
        ],
        ..ExecuteRequest::default()
    };
    let r = b.mgr.execute(&write(b"one"), 8).unwrap();
    assert!(r.commit_ts.is_some());
    assert_eq!(a.service.calls("one_pc"), 1);
    assert_eq!(a.service.calls("prewrite"), 0, "no locks, one proposal");
    assert_eq!(a.stored(b"one/2"), Some(b"w".to_vec()));

    // Carried out, its reply lost: the re-send finds the commit record and answers with
    // the same commit timestamp; nothing runs twice.
    a.hook.drop.lock().insert("one_pc", 1);
    let r = b.mgr.execute(&write(b"again"), 8).unwrap();
    assert!(r.commit_ts.is_some());
    assert_eq!(a.service.calls("one_pc"), 3);
    assert_eq!(a.stored(b"again"), Some(b"v".to_vec()));

    // Every reply lost: the coordinator settles through the primary (rollback answers
    // Committed) and reports the commit, not an invented failure.
    a.hook.drop.lock().insert("one_pc", u32::MAX);
    let r = b.mgr.execute(&write(b"settled"), 8).unwrap();
    assert!(r.commit_ts.is_some());
    assert!(a.service.calls("rollback") >= 1, "settled at the primary");
    assert_eq!(a.stored(b"settled"), Some(b"v".to_vec()));
    a.hook.drop.lock().remove("one_pc");

    // SERIALIZABLE write skew across gateways, both in one phase: the second is refused.
    b.mgr.execute(&write(b"x"), 8).unwrap();
    let t1 = b.begin_serializable();
    let t2 = a.begin_serializable();
    assert!(b.mgr.get(t1, b"x").unwrap().is_some());
    assert!(a.mgr.get(t2, b"x/2").unwrap().is_some());
    b.mgr.write(t1, b"x/2", None).unwrap();
    a.mgr.write(t2, b"x", None).unwrap();
    assert!(b.mgr.commit(t1).unwrap().is_some());
    assert!(matches!(a.mgr.commit(t2), Err(TxnError::Conflict { .. })));
}

#[test]
fn blind_writes_run_at_a_remote_leader_and_a_lost_reply_is_never_sent_again() {
    let c = Cluster::start(
        2,
        TxnConfig {
            outcome_resolve_timeout: Duration::from_millis(300),
            ..TxnConfig::default()
        },
        RouterConfig {
            retry_deadline: Duration::from_millis(200),
            ..router_config()
        },
    );
    let (a, b) = (c.node(1), c.node(2));
    a.storage.set_ts_source(a.local_tso.clone());
    let one = |n: &Node, key: &[u8]| {
        c.rt()
            .block_on(Arc::clone(&n.mgr).write_one(key.to_vec(), Some(b"v".to_vec()), 8))
    };
    // The term's first write takes the leader's max_ts floor, as a transaction.
    let r = one(b, b"warm-up").unwrap();
    assert!(r.start_ts < r.commit_ts.unwrap());
    let one_pcs = a.service.calls("one_pc");
    // Then from the follower: one BlindWrites call at the leader, at one timestamp.
    let r = one(b, b"k").unwrap();
    assert_eq!(r.commit_ts, Some(r.start_ts));
    assert_eq!(a.service.calls("blind_writes"), 2);
    assert_eq!(a.service.calls("one_pc"), one_pcs, "no transaction");
    assert_eq!(a.stored(b"k"), Some(b"v".to_vec()));
    // On the leader itself: no call at all.
    let r = one(a, b"here").unwrap();
    assert_eq!(r.commit_ts, Some(r.start_ts));
    assert_eq!(a.service.calls("blind_writes"), 2);
    // Declined at the leader (a crashed coordinator's expired lock on the key): the
    // follower runs it as a transaction, which resolves the lock.
    let lock_ts = a.local_tso.get_timestamp().unwrap();
    let options = PrewriteOptions {
        primary: b"locked".to_vec(),
        ttl_ms: 0,
        min_commit_ts: lock_ts + 1,
        coordinator: None,
    };
    a.storage
        .prewrite(
            &[Mutation::Put(b"locked".to_vec(), b"old".to_vec())],
            &options,
            lock_ts,
        )
        .unwrap();
    let r = one(b, b"locked").unwrap();
    assert!(r.start_ts < r.commit_ts.unwrap(), "a transaction");
    assert_eq!(a.service.calls("blind_writes"), 3);
    assert_eq!(a.stored(b"locked"), Some(b"v".to_vec()));
    // Carried out, its reply lost: the leader chose the timestamp, so a second attempt
    // would be a second write. OutcomeUnknown at once, sent once.
    a.hook.drop.lock().insert("blind_writes", 1);
    let r = one(b, b"lost");
    assert!(
        matches!(r, Err(TxnError::Mvcc(MvccError::OutcomeUnknown(_)))),
        "{r:?}"
    );
    assert_eq!(a.service.calls("blind_writes"), 4, "not sent again");
    assert_eq!(a.stored(b"lost"), Some(b"v".to_vec()));
}

#[test]
fn blind_writes_arriving_while_others_are_forwarded_ride_in_one_batch() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    a.storage.set_ts_source(a.local_tso.clone());
    let write = |key: Vec<u8>| Arc::clone(&b.mgr).write_one(key, Some(b"v".to_vec()), 8);
    c.rt().block_on(write(b"warm-up".to_vec())).unwrap();
    // Hold every call at the leader until all the writes are queued or in calls.
    let gate = Arc::new(Gate::default());
    a.hook.hold.lock().insert("blind_writes", Arc::clone(&gate));
    let stats = b.router.stats();
    let (calls, queued) = (
        stats.forward_batches.load(Ordering::SeqCst),
        stats.forwarded.load(Ordering::SeqCst),
    );
    let writes: Vec<_> = (0..14)
        .map(|i| c.rt().spawn(write(format!("w{i}").into_bytes())))
        .collect();
    wait_until("all 14 writes are queued", || {
        stats.forwarded.load(Ordering::SeqCst) == queued + 14
    });
    gate.open();
    for w in writes {
        let r = c.rt().block_on(w).unwrap().unwrap();
        assert_eq!(r.commit_ts, Some(r.start_ts), "blind");
    }
    // At most one call per sender while the leader held them, then one for the rest.
    let sent = stats.forward_batches.load(Ordering::SeqCst) - calls;
    assert!(sent <= 5, "{sent} calls for 14 writes");
    for i in 0..14 {
        assert_eq!(a.stored(format!("w{i}").as_bytes()), Some(b"v".to_vec()));
    }
}

#[test]
fn latest_reads_run_at_a_remote_leader_and_a_lost_reply_is_sent_again() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    a.storage.set_ts_source(a.local_tso.clone());
    c.rt()
        .block_on(Arc::clone(&b.mgr).write_one(b"k".to_vec(), Some(b"v".to_vec()), 8))
        .unwrap();
    let read = |n: &Node, keys: &[&[u8]]| {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        c.rt().block_on(n.mgr.read_latest(&keys))
    };
    // From the follower: one LatestReads call, at a timestamp above every one issued.
    let issued = a.local_tso.get_timestamp().unwrap();
    let (values, ts) = read(b, &[b"k", b"none"]).unwrap();
    assert_eq!(values, [Some(b"v".to_vec()), None]);
    assert!(ts > issued);
    assert_eq!(a.service.calls("latest_reads"), 1);
    // On the leader itself: no call at all.
    assert_eq!(read(a, &[b"k"]).unwrap().0, [Some(b"v".to_vec())]);
    assert_eq!(a.service.calls("latest_reads"), 1);
    // A lock on one key: declined at the leader, left to a transaction.
    let lock_ts = a.local_tso.get_timestamp().unwrap();
    let options = PrewriteOptions {
        primary: b"locked".to_vec(),
        ttl_ms: HOUR_MS,
        min_commit_ts: lock_ts + 1,
        coordinator: None,
    };
    a.storage
        .prewrite(
            &[Mutation::Put(b"locked".to_vec(), b"x".to_vec())],
            &options,
            lock_ts,
        )
        .unwrap();
    assert_eq!(read(b, &[b"k", b"locked"]), None);
    assert_eq!(a.service.calls("latest_reads"), 2);
    // A lost reply: a read has no effect, so it is sent again and answered.
    a.hook.drop.lock().insert("latest_reads", 1);
    assert_eq!(read(b, &[b"k"]).unwrap().0, [Some(b"v".to_vec())]);
    assert_eq!(a.service.calls("latest_reads"), 4, "sent again once");
}

#[test]
fn latest_reads_arriving_while_others_are_forwarded_ride_in_one_batch() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    a.storage.set_ts_source(a.local_tso.clone());
    for i in 0..14 {
        c.rt()
            .block_on(Arc::clone(&b.mgr).write_one(
                format!("r{i}").into_bytes(),
                Some(format!("v{i}").into_bytes()),
                8,
            ))
            .unwrap();
    }
    // Hold every call at the leader until all the reads are queued or in calls.
    let gate = Arc::new(Gate::default());
    a.hook.hold.lock().insert("latest_reads", Arc::clone(&gate));
    let stats = b.router.stats();
    let (calls, queued) = (
        stats.read_batches.load(Ordering::SeqCst),
        stats.forwarded_reads.load(Ordering::SeqCst),
    );
    let reads: Vec<_> = (0..14)
        .map(|i| {
            let m = Arc::clone(&b.mgr);
            c.rt()
                .spawn(async move { m.read_latest(&[format!("r{i}").into_bytes()]).await })
        })
        .collect();
    wait_until("all 14 reads are queued", || {
        stats.forwarded_reads.load(Ordering::SeqCst) == queued + 14
    });
    gate.open();
    for (i, r) in reads.into_iter().enumerate() {
        let (values, _) = c.rt().block_on(r).unwrap().unwrap();
        assert_eq!(values, [Some(format!("v{i}").into_bytes())], "its own key");
    }
    // At most one call per sender while the leader held them, then one for the rest.
    let sent = stats.read_batches.load(Ordering::SeqCst) - calls;
    assert!(sent <= 5, "{sent} calls for 14 reads");
}
