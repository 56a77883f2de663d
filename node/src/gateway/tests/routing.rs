//! Transactions through gateways: reads, writes, conflicts, lock waits, SERIALIZABLE write
//! skew, and following a NotLeader hint.

use super::*;

#[test]
fn transactions_begun_on_any_gateway_run_on_the_leaders_storage() {
    let c = three();
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    for i in 0..10u8 {
        let key = format!("k/{i:02}").into_bytes();
        b.put(&key, &[b'v', i]).unwrap();
    }
    // The data is on the leader only: B and C merely routed.
    assert_eq!(a.stored(b"k/03"), Some(b"v\x03".to_vec()));
    assert_eq!(b.stored(b"k/03"), None);
    assert_eq!(cc.stored(b"k/03"), None);
    assert_eq!(cc.read(b"k/03"), Some(b"v\x03".to_vec()));

    // A scan from C, three pairs a page, through the leader.
    let (t, _) = cc.mgr.begin(Isolation::Snapshot, true).unwrap();
    let mut from = b"k/".to_vec();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = cc
            .mgr
            .scan_page(t, &from, Some(b"k0"), ScanLimit::pairs(3), false)
            .unwrap();
        pages += 1;
        seen.extend(page.pairs.iter().map(|(k, _)| k.clone()));
        match (page.more, page.pairs.last()) {
            (true, Some((last, _))) => {
                from = last.clone();
                from.push(0);
            }
            _ => break,
        }
    }
    cc.mgr.rollback(t).unwrap();
    assert_eq!(seen.len(), 10);
    assert!(pages >= 4, "{pages} pages");
    // Reverse, with the transaction's own writes laid over the leader's rows.
    let (t, _) = b.mgr.begin(Isolation::Snapshot, false).unwrap();
    b.mgr.write(t, b"k/05", None).unwrap();
    let rows = b.mgr.scan(t, b"k/", Some(b"k0"), 3, true).unwrap();
    let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, [&b"k/09"[..], b"k/08", b"k/07"]);
    b.mgr.rollback(t).unwrap();

    assert_eq!(b.router.stats().local.load(Ordering::Relaxed), 0);
    assert!(b.router.stats().remote.load(Ordering::Relaxed) > 0);
    assert_eq!(
        b.connections.channels(),
        1,
        "one channel to the leader, reused"
    );
    assert_eq!(a.connections.channels(), 0, "the leader calls nobody");
    assert!(a.service.calls("prewrite") >= 10);
    assert!(a.service.calls("scan_page") >= 4);
    // On the leader itself, commands run in-process.
    a.put(b"own", b"1").unwrap();
    assert!(a.router.stats().local.load(Ordering::Relaxed) > 0);
    assert_eq!(a.router.stats().remote.load(Ordering::Relaxed), 0);
    assert_eq!(cc.read(b"own"), Some(b"1".to_vec()));
}

#[test]
fn conflicts_and_lock_resolution_cross_gateways() {
    let c = three();
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    // Two gateways write the same key: the second to commit aborts.
    let (t1, _) = b.mgr.begin(Isolation::Snapshot, false).unwrap();
    let (t2, _) = cc.mgr.begin(Isolation::Snapshot, false).unwrap();
    b.mgr.write(t1, b"x", Some(b"b")).unwrap();
    cc.mgr.write(t2, b"x", Some(b"c")).unwrap();
    b.mgr.commit(t1).unwrap();
    let r = cc.mgr.commit(t2);
    assert!(
        matches!(
            r,
            Err(TxnError::Conflict {
                kind: ConflictKind::WriteConflict,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(a.stored(b"x"), Some(b"b".to_vec()));

    // A transaction that committed only its primary (through B's router); C's read of the
    // secondary resolves it through the primary, over the RPC.
    let start = b.tso.get_timestamp().unwrap();
    let keys = [b"p".to_vec(), b"s".to_vec()];
    let ms: Vec<Mutation> = keys
        .iter()
        .map(|k| Mutation::Put(k.clone(), b"2pc".to_vec()))
        .collect();
    let opts = PrewriteOptions {
        primary: keys[0].clone(),
        ttl_ms: HOUR_MS,
        min_commit_ts: start + 1,
        coordinator: None,
    };
    b.router.prewrite(&ms, &opts, start).unwrap();
    let commit_ts = b.tso.get_timestamp().unwrap();
    b.router.commit(&keys[..1], start, commit_ts, None).unwrap();
    assert_eq!(a.storage.lock_holder(b"s").unwrap(), Some(start));
    assert_eq!(cc.read(b"s"), Some(b"2pc".to_vec()));
    assert_eq!(
        a.storage.lock_holder(b"s").unwrap(),
        None,
        "resolved forward at the leader"
    );
    assert!(a.service.calls("check_txn_status") >= 1);
    assert!(a.service.calls("resolve_lock") >= 1);
}

#[test]
fn lock_waits_at_a_remote_leader_are_woken_by_a_release_over_the_rpc() {
    let c = Cluster::start(
        3,
        TxnConfig {
            // Only a release can end these waits in time.
            lock_wait: PATIENCE,
            ..TxnConfig::default()
        },
        router_config(),
    );
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    let holder = a.local_tso.get_timestamp().unwrap();
    let opts = PrewriteOptions {
        primary: b"hot".to_vec(),
        ttl_ms: HOUR_MS,
        min_commit_ts: holder + 1,
        coordinator: None,
    };
    a.storage
        .prewrite(
            &[Mutation::Put(b"hot".to_vec(), b"held".to_vec())],
            &opts,
            holder,
        )
        .unwrap();

    // Two gateways block on the lock: C synchronously (a thread waits on the poll), B on
    // the asynchronous path (the poll is a future: no thread held while it waits).
    let began = Instant::now();
    let (tc, _) = cc.mgr.begin(Isolation::Snapshot, false).unwrap();
    cc.mgr.write(tc, b"hot", Some(b"c")).unwrap();
    let sync_commit = {
        let mgr = Arc::clone(&cc.mgr);
        std::thread::spawn(move || mgr.commit(tc))
    };
    let (tb, _) = b.mgr.begin(Isolation::Snapshot, false).unwrap();
    b.mgr.write(tb, b"hot", Some(b"b")).unwrap();
    let async_commit = c.rt().spawn(Arc::clone(&b.mgr).commit_async(tb));
    wait_until("both gateways wait at the leader", || {
        a.storage.lock_waits().waiting(b"hot") == 2
    });
    assert_eq!(a.service.calls("wait_for_lock"), 2);

    // Released over the RPC, from the third node's router.
    b.router.rollback(&[b"hot".to_vec()], holder).unwrap();
    let rc = sync_commit.join().unwrap();
    let rb = c.rt().block_on(async_commit).unwrap();
    assert!(began.elapsed() < PATIENCE, "woken, not timed out");
    // Both were woken and went on: one took the key and committed, the other then met
    // its commit (a newer write than its start) and aborted, retryably.
    let winner = match (&rc, &rb) {
        (Ok(Some(_)), r) if is_conflict(r) => b"c",
        (r, Ok(Some(_))) if is_conflict(r) => b"b",
        _ => panic!("expected one commit and one conflict: {rc:?} {rb:?}"),
    };
    assert_eq!(a.stored(b"hot"), Some(winner.to_vec()));
    assert_eq!(a.storage.lock_waits().total_waiting(), 0);
    // Woken by releases, not polling: the two first polls, and at most one more each.
    assert!(a.service.calls("wait_for_lock") <= 4);
}

#[test]
fn serializable_write_skew_is_refused_across_gateways() {
    let c = three();
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    a.put(b"x", b"1").unwrap();
    a.put(b"y", b"1").unwrap();
    // Point reads: B reads x and writes y, C reads y and writes x.
    let t1 = b.begin_serializable();
    let t2 = cc.begin_serializable();
    assert_eq!(b.mgr.get(t1, b"x").unwrap(), Some(b"1".to_vec()));
    assert_eq!(cc.mgr.get(t2, b"y").unwrap(), Some(b"1".to_vec()));
    b.mgr.write(t1, b"y", Some(b"0")).unwrap();
    cc.mgr.write(t2, b"x", Some(b"0")).unwrap();
    let r1 = b.mgr.commit(t1);
    let r2 = cc.mgr.commit(t2);
    assert!(
        r1.is_ok() != r2.is_ok(),
        "exactly one commits: {r1:?} {r2:?}"
    );
    assert!(is_conflict(&r2), "{r2:?}");
    // Scans (range locks at the leader): B scans a/ and writes b/1, C scans b/ and writes a/1.
    let t3 = b.begin_serializable();
    let t4 = cc.begin_serializable();
    assert!(b
        .mgr
        .scan(t3, b"a/", Some(b"a0"), 10, false)
        .unwrap()
        .is_empty());
    assert!(cc
        .mgr
        .scan(t4, b"b/", Some(b"b0"), 10, false)
        .unwrap()
        .is_empty());
    b.mgr.write(t3, b"b/1", Some(b"1")).unwrap();
    cc.mgr.write(t4, b"a/1", Some(b"1")).unwrap();
    assert!(b.mgr.commit(t3).is_ok());
    let r4 = cc.mgr.commit(t4);
    assert!(is_conflict(&r4), "{r4:?}");
    assert_eq!(
        a.stored(b"a/1"),
        None,
        "nothing of the aborted one committed"
    );
    assert!(a.service.calls("lock_ranges") >= 2);
    wait_until("the range locks are released at the leader", || {
        a.storage.range_locks().is_empty()
    });
}

#[test]
fn a_not_leader_hint_is_followed_to_the_node_that_leads_now() {
    let c = three();
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    // Leadership moves to B; A and B know it, C's view is stale.
    *a.view.leader.lock() = Some(2);
    *b.view.leader.lock() = Some(2);
    let r = cc.mgr.execute(
        &ExecuteRequest {
            writes: vec![(b"moved".to_vec(), Some(b"1".to_vec()))],
            ..ExecuteRequest::default()
        },
        1,
    );
    assert!(r.unwrap().commit_ts.is_some());
    assert_eq!(b.stored(b"moved"), Some(b"1".to_vec()));
    assert_eq!(a.stored(b"moved"), None);
    assert!(cc.router.stats().hints_followed.load(Ordering::Relaxed) >= 2);
    assert!(
        cc.tso
            .inner()
            .stats()
            .hints_followed
            .load(Ordering::Relaxed)
            >= 1
    );
    assert!(
        a.service.calls("prewrite") >= 1,
        "tried the old leader first"
    );
    assert_eq!(
        cc.connections.channels(),
        2,
        "one channel per leader address"
    );
    // Once C's view catches up it goes to B directly.
    *cc.view.leader.lock() = Some(2);
    let hints = cc.router.stats().hints_followed.load(Ordering::Relaxed);
    assert_eq!(cc.read(b"moved"), Some(b"1".to_vec()));
    assert_eq!(
        cc.router.stats().hints_followed.load(Ordering::Relaxed),
        hints
    );
}
