use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::*;

/// Builds register histories by hand: times are arbitrary units, values are strings.
#[derive(Default)]
struct H(RegisterHistory);

fn bytes(v: &str) -> Vec<u8> {
    v.as_bytes().to_vec()
}

impl H {
    fn op(
        mut self,
        client: ClientId,
        key: &str,
        (call, ret): (u64, u64),
        input: RegisterInput,
        output: RegisterOutput,
    ) -> H {
        self.0
            .push(Operation::returned(client, key, input, call, ret, output));
        self
    }

    fn read(self, client: ClientId, key: &str, span: (u64, u64), seen: Option<&str>) -> H {
        let output = RegisterOutput::Read(seen.map(bytes));
        self.op(client, key, span, RegisterInput::Read, output)
    }

    fn write(self, client: ClientId, key: &str, span: (u64, u64), v: &str) -> H {
        let input = RegisterInput::Write(bytes(v));
        self.op(client, key, span, input, RegisterOutput::Write)
    }

    fn cas(
        self,
        client: ClientId,
        key: &str,
        span: (u64, u64),
        (expected, new): (Option<&str>, &str),
        done: bool,
    ) -> H {
        let input = RegisterInput::CompareAndSet {
            expected: expected.map(bytes),
            new: bytes(new),
        };
        self.op(
            client,
            key,
            span,
            input,
            RegisterOutput::CompareAndSet(done),
        )
    }

    fn unknown(mut self, client: ClientId, key: &str, call: u64, input: RegisterInput) -> H {
        self.0.push(Operation::unknown(client, key, input, call));
        self
    }

    fn write_unknown(self, client: ClientId, key: &str, call: u64, v: &str) -> H {
        self.unknown(client, key, call, RegisterInput::Write(bytes(v)))
    }

    fn check(&self) -> Verdict {
        check_register(&self.0, &Limits::default())
    }
}

fn violation(v: Verdict) -> Violation {
    match v {
        Verdict::NotLinearizable(v) => v,
        other => panic!("expected a violation, got {other}"),
    }
}

fn prefix_indices(v: &Violation) -> Vec<usize> {
    v.prefix.iter().map(|op| op.index).collect()
}

#[test]
fn a_sequential_history_is_linearizable() {
    let h = H::default()
        .read(0, "x", (0, 1), None)
        .write(0, "x", (2, 3), "1")
        .read(1, "x", (4, 5), Some("1"))
        .cas(1, "x", (6, 7), (Some("1"), "2"), true)
        .cas(0, "x", (8, 9), (Some("1"), "3"), false)
        .read(0, "x", (10, 11), Some("2"))
        .cas(2, "y", (12, 13), (None, "y1"), true)
        .read(2, "y", (14, 15), Some("y1"))
        .read(2, "z", (16, 17), None);
    assert_eq!(h.check(), Verdict::Linearizable);
    assert_eq!(
        check_register(&RegisterHistory::new(), &Limits::default()),
        Verdict::Linearizable
    );
}

#[test]
fn concurrent_operations_take_any_order_real_time_allows() {
    // Two overlapping writes: a later read may see either, but then it sticks.
    for last in ["1", "2"] {
        let h = H::default()
            .write(0, "x", (0, 100), "1")
            .write(1, "x", (10, 90), "2")
            .read(2, "x", (110, 120), Some(last))
            .read(3, "x", (130, 140), Some(last));
        assert_eq!(h.check(), Verdict::Linearizable, "last write {last}");
    }
    // A read overlapping a write may return the old or the new value.
    for seen in [None, Some("1")] {
        let h = H::default()
            .write(0, "x", (0, 100), "1")
            .read(1, "x", (50, 60), seen);
        assert_eq!(h.check(), Verdict::Linearizable, "read {seen:?}");
    }
    // Equal timestamps count as concurrent: the read may precede the write.
    let h = H::default()
        .write(0, "x", (0, 10), "1")
        .read(1, "x", (10, 20), None);
    assert_eq!(h.check(), Verdict::Linearizable);
}

#[test]
fn a_read_cannot_return_the_old_value_after_an_earlier_read_saw_the_new_one() {
    // Both reads overlap the write, but the first one's return precedes the second's call.
    let h = H::default()
        .write(0, "x", (0, 100), "1")
        .read(1, "x", (10, 20), Some("1"))
        .read(2, "x", (30, 40), None);
    let v = violation(h.check());
    assert_eq!(v.stuck.index, 2);
    assert_eq!(prefix_indices(&v), vec![0, 1]);
}

#[test]
fn a_stale_read_is_caught_and_named() {
    let h = H::default()
        .write(0, "x", (0, 10), "1")
        .write(0, "x", (20, 30), "2")
        .write(1, "y", (20, 30), "other key")
        .read(1, "x", (40, 50), Some("1"));
    let v = violation(h.check());
    assert_eq!(v.key, b"x");
    assert_eq!(
        v.stuck.index, 3,
        "the stale read is the operation that cannot be placed"
    );
    assert_eq!(v.stuck.client, 1);
    assert_eq!((v.stuck.call, v.stuck.ret), (40, Some(50)));
    assert_eq!(prefix_indices(&v), vec![0, 1]);
    assert_eq!(v.state, "\"2\"");
    let text = v.to_string();
    assert!(
        text.contains("key \"x\" is not linearizable: #3 client 1 [40, 50] read: \"1\""),
        "{text}"
    );
    assert!(text.contains("leaving \"2\""), "{text}");
    assert!(
        text.contains("#1 client 0 [20, 30] write \"2\": ok"),
        "{text}"
    );
}

#[test]
fn two_compare_and_sets_from_the_same_value_cannot_both_succeed() {
    let base = H::default().write(0, "x", (0, 10), "0");
    let both = H(base.0.clone())
        .cas(1, "x", (20, 40), (Some("0"), "1"), true)
        .cas(2, "x", (25, 45), (Some("0"), "2"), true);
    let v = violation(both.check());
    assert_eq!(v.prefix.len(), 2);
    assert!(v.stuck.description.starts_with("cas \"0\" -> "), "{v}");
    assert!([1, 2].contains(&v.stuck.index));
    assert!(!prefix_indices(&v).contains(&v.stuck.index));

    // One winner, one loser is fine, as is the loser seeing the winner's value.
    let one = H(base.0.clone())
        .cas(1, "x", (20, 40), (Some("0"), "1"), true)
        .cas(2, "x", (25, 45), (Some("0"), "2"), false)
        .read(3, "x", (50, 60), Some("1"));
    assert_eq!(one.check(), Verdict::Linearizable);
    // A compare-and-set failing on a value the key holds is not.
    let wrong = H(base.0).cas(1, "x", (20, 40), (Some("0"), "1"), false);
    assert_eq!(violation(wrong.check()).stuck.index, 1);
}

#[test]
fn unknown_outcomes_may_take_effect_later_or_never() {
    // Becomes visible long after its call (and after later acknowledged operations).
    let later = H::default()
        .write(0, "x", (0, 10), "1")
        .write_unknown(1, "x", 20, "2")
        .read(2, "x", (30, 40), Some("1"))
        .read(2, "x", (50, 60), Some("2"))
        .read(3, "x", (70, 80), Some("2"));
    assert_eq!(later.check(), Verdict::Linearizable);
    // Never takes effect.
    let never = H::default()
        .write(0, "x", (0, 10), "1")
        .write_unknown(1, "x", 20, "2")
        .read(2, "x", (30, 40), Some("1"))
        .read(2, "x", (1_000, 1_010), Some("1"));
    assert_eq!(never.check(), Verdict::Linearizable);
    // An unknown compare-and-set that took effect.
    let cas = H::default()
        .write(0, "x", (0, 10), "1")
        .unknown(
            1,
            "x",
            20,
            RegisterInput::CompareAndSet {
                expected: Some(bytes("1")),
                new: bytes("2"),
            },
        )
        .read(2, "x", (30, 40), Some("2"));
    assert_eq!(cas.check(), Verdict::Linearizable);
    // Unknown reads constrain nothing.
    let reads = H::default()
        .unknown(0, "x", 0, RegisterInput::Read)
        .write(1, "x", (5, 10), "1")
        .unknown(0, "x", 20, RegisterInput::Read);
    assert_eq!(reads.check(), Verdict::Linearizable);
}

#[test]
fn an_unknown_write_seen_before_its_call_is_rejected() {
    let h = H::default()
        .read(0, "x", (0, 10), Some("2"))
        .write_unknown(1, "x", 20, "2");
    let v = violation(h.check());
    assert_eq!(v.stuck.index, 0);
    assert!(v.prefix.is_empty());
    assert_eq!(v.state, "<absent>");

    // Nor can its effect be undone: once seen, it stays until overwritten.
    let h = H::default()
        .write(0, "x", (0, 10), "1")
        .write_unknown(1, "x", 20, "2")
        .read(2, "x", (30, 40), Some("2"))
        .read(2, "x", (50, 60), Some("1"));
    assert_eq!(violation(h.check()).stuck.index, 3);
    // And an unknown compare-and-set cannot take effect from the wrong value.
    let h = H::default()
        .write(0, "x", (0, 10), "1")
        .unknown(
            1,
            "x",
            20,
            RegisterInput::CompareAndSet {
                expected: Some(bytes("0")),
                new: bytes("2"),
            },
        )
        .read(2, "x", (30, 40), Some("2"));
    assert_eq!(violation(h.check()).stuck.index, 2);
}

#[test]
fn an_answer_of_the_wrong_kind_cannot_be_placed() {
    let h = H::default().op(0, "x", (0, 1), RegisterInput::Read, RegisterOutput::Write);
    assert_eq!(violation(h.check()).stuck.index, 0);
}

#[test]
fn a_return_before_the_call_is_malformed() {
    let h = H::default()
        .write(0, "x", (0, 1), "1")
        .read(0, "x", (5, 4), Some("1"));
    assert!(matches!(h.check(), Verdict::Malformed { op: 1, .. }));
}

/// Writes of distinct values, all concurrent, then a read of a value none wrote: to reject
/// it the search must try every order of the writes (pruned to (set, last value) pairs,
/// still exponential).
fn huge(writes: u64) -> H {
    let mut h = H::default();
    for i in 0..writes {
        h = h.write(i, "x", (i, 1_000), &format!("w{i}"));
    }
    h.read(writes, "x", (2_000, 2_001), Some("never written"))
}

#[test]
fn the_bounds_return_unknown_on_a_huge_history() {
    let h = huge(40);
    let limits = Limits::default().with_max_states(10_000);
    match check_register(&h.0, &limits) {
        Verdict::Unknown(u) => {
            assert_eq!(u.key, b"x");
            assert_eq!(u.ops, 41);
            assert_eq!(u.states, 10_000);
            assert_eq!(u.bound, Bound::States(10_000));
            assert_eq!(u.keys, 1);
        }
        other => panic!("expected unknown, got {other}"),
    }
    // A deadline already passed stops it too, and the keys after it count as unchecked.
    let h = h.write(0, "y", (0, 1), "1");
    let limits = Limits::default()
        .with_max_states(u64::MAX)
        .with_deadline(Instant::now());
    match check_register(&h.0, &limits) {
        Verdict::Unknown(u) => {
            assert_eq!(
                (u.key.as_slice(), u.bound, u.keys),
                (&b"x"[..], Bound::Deadline, 2)
            );
        }
        other => panic!("expected unknown, got {other}"),
    }
    // The same shape, small enough, is decided: not linearizable.
    let v = violation(check_register(&huge(6).0, &Limits::default()));
    assert_eq!((v.stuck.index, v.prefix.len()), (6, 6));
}

#[test]
fn a_violation_on_one_key_wins_over_an_undecided_one() {
    let mut h = huge(40);
    h = h.write(0, "z", (0, 10), "1").read(1, "z", (20, 30), None);
    let limits = Limits::default().with_max_states(1_000);
    let v = violation(check_register(&h.0, &limits));
    assert_eq!(v.key, b"z");
    assert_eq!(v.stuck.index, 42);
}

#[test]
fn keys_are_checked_independently() {
    // Per key each is fine; as one register it would not be.
    let h = H::default()
        .write(0, "x", (0, 10), "1")
        .write(1, "y", (20, 30), "2")
        .read(2, "x", (40, 50), Some("1"))
        .read(2, "y", (60, 70), Some("2"));
    assert_eq!(h.check(), Verdict::Linearizable);
}

#[test]
fn the_recorder_keeps_answers_drops_failures_and_marks_the_rest_unknown() {
    let rec = RegisterRecorder::new();
    let w = rec.invoke(0, "x", RegisterInput::Write(bytes("1")));
    rec.ok(w, RegisterOutput::Write);
    let refused = rec.invoke(1, "x", RegisterInput::Write(bytes("refused")));
    rec.fail(refused);
    let lost = rec.invoke(1, "x", RegisterInput::Write(bytes("2")));
    rec.unknown(lost);
    let abandoned = rec.invoke(2, "x", RegisterInput::Write(bytes("3")));
    drop(abandoned);
    let r = rec.invoke(3, "x", RegisterInput::Read);
    rec.ok(r, RegisterOutput::Read(Some(bytes("1"))));

    let h = rec.history();
    assert_eq!(h, rec.into_history());
    let summary: Vec<(ClientId, &RegisterInput, bool)> = h
        .ops
        .iter()
        .map(|op| (op.client, &op.input, op.completion.output().is_some()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, &RegisterInput::Write(bytes("1")), true),
            (1, &RegisterInput::Write(bytes("2")), false),
            (2, &RegisterInput::Write(bytes("3")), false),
            (3, &RegisterInput::Read, true),
        ]
    );
    for op in &h.ops {
        if let Some(ret) = op.completion.returned_at() {
            assert!(op.call <= ret);
        }
    }
    let (first, last) = (&h.ops[0], &h.ops[3]);
    assert!(first.completion.returned_at() <= Some(last.call));
    assert_eq!(
        check_register(&h, &Limits::default()),
        Verdict::Linearizable
    );
}

#[test]
fn a_history_recorded_from_threads_on_a_locked_register_is_linearizable() {
    const CLIENTS: u64 = 4;
    const OPS: u64 = 50;
    let rec = RegisterRecorder::new();
    let register: parking_lot::Mutex<Option<Vec<u8>>> = parking_lot::Mutex::new(None);
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            let (rec, register) = (&rec, &register);
            s.spawn(move || {
                for n in 0..OPS {
                    let value = format!("c{client}-{n}").into_bytes();
                    let input = match (client + n) % 3 {
                        0 => RegisterInput::Read,
                        1 => RegisterInput::Write(value),
                        _ => RegisterInput::CompareAndSet {
                            expected: register.lock().clone(),
                            new: value,
                        },
                    };
                    let token = rec.invoke(client, "x", input.clone());
                    let output = {
                        let mut r = register.lock();
                        match input {
                            RegisterInput::Read => RegisterOutput::Read(r.clone()),
                            RegisterInput::Write(v) => {
                                *r = Some(v);
                                RegisterOutput::Write
                            }
                            RegisterInput::CompareAndSet { expected, new } => {
                                let done = *r == expected;
                                if done {
                                    *r = Some(new);
                                }
                                RegisterOutput::CompareAndSet(done)
                            }
                        }
                    };
                    rec.ok(token, output);
                }
            });
        }
    });
    let h = rec.into_history();
    assert_eq!(h.len() as u64, CLIENTS * OPS);
    let verdict = check_register(&h, &Limits::default());
    assert!(verdict.is_linearizable(), "{verdict}");
}

/// One step of a generated sequential execution.
#[derive(Debug, Clone, Copy)]
enum Step {
    Read,
    Write,
    CasHit,
    CasMiss,
    /// A write whose client never learnt it took effect (it did).
    WriteUnknownApplied,
    /// A write whose client never learnt it was lost.
    WriteUnknownLost,
    CasUnknownApplied,
    ReadUnknown,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Read),
        3 => Just(Step::Write),
        1 => Just(Step::CasHit),
        1 => Just(Step::CasMiss),
        1 => Just(Step::WriteUnknownApplied),
        1 => Just(Step::WriteUnknownLost),
        1 => Just(Step::CasUnknownApplied),
        1 => Just(Step::ReadUnknown),
    ]
}

/// Spacing of the linearization points.
const TICK: u64 = 10;

/// Runs `steps` sequentially on registers `k0`..`k2`, the i-th at point `(i + 1) * TICK`
/// plus a base, and gives each operation an interval around its point: `before` earlier
/// and `after` later, so neighbours overlap at random. Every value written is unique.
fn generate(steps: &[(u8, Step, u64, u64)]) -> RegisterHistory {
    let mut states: [Option<Vec<u8>>; 3] = Default::default();
    let mut h = RegisterHistory::new();
    for (i, &(key, step, before, after)) in steps.iter().enumerate() {
        let key_index = usize::from(key % 3);
        let key = format!("k{key_index}");
        let point = 1_000 + (i as u64 + 1) * TICK;
        let (call, ret) = (point - before, point + after);
        let fresh = format!("v{i}").into_bytes();
        let state = &mut states[key_index];
        // What is asked, and the answer (`None`: the client never learnt the outcome).
        let (input, output) = match step {
            Step::Read => (
                RegisterInput::Read,
                Some(RegisterOutput::Read(state.clone())),
            ),
            Step::ReadUnknown => (RegisterInput::Read, None),
            Step::Write | Step::WriteUnknownApplied => {
                *state = Some(fresh.clone());
                let known = matches!(step, Step::Write);
                (
                    RegisterInput::Write(fresh),
                    known.then_some(RegisterOutput::Write),
                )
            }
            Step::WriteUnknownLost => (RegisterInput::Write(fresh), None),
            Step::CasHit | Step::CasUnknownApplied => {
                let input = RegisterInput::CompareAndSet {
                    expected: state.replace(fresh.clone()),
                    new: fresh,
                };
                let known = matches!(step, Step::CasHit);
                (input, known.then_some(RegisterOutput::CompareAndSet(true)))
            }
            Step::CasMiss => {
                let expected = match state {
                    Some(_) => None,
                    None => Some(format!("miss{i}").into_bytes()),
                };
                let input = RegisterInput::CompareAndSet {
                    expected,
                    new: fresh,
                };
                (input, Some(RegisterOutput::CompareAndSet(false)))
            }
        };
        let client = i as ClientId;
        let op = match output {
            Some(output) => Operation::returned(client, key, input, call, ret, output),
            None => Operation::unknown(client, key, input, call),
        };
        h.push(op);
    }
    h
}

/// The value an operation writes, if any, and whether it certainly took effect.
fn written(op: &Operation<RegisterInput, RegisterOutput>) -> Option<(&Vec<u8>, bool)> {
    match (&op.input, &op.completion) {
        (RegisterInput::Write(v), c) => Some((v, c.output().is_some())),
        (RegisterInput::CompareAndSet { new, .. }, c) => match c.output() {
            Some(RegisterOutput::CompareAndSet(done)) => done.then_some((new, true)),
            Some(_) => None,
            None => Some((new, false)),
        },
        _ => None,
    }
}

/// Values the read `r` can never return: one nobody wrote; any written by an operation
/// called after `r` returned; and any written by a certain write `a` that a certain write
/// `b` of another value follows in real time, `b` returning before `r` was called.
fn impossible_values(h: &RegisterHistory, r: usize) -> Vec<Vec<u8>> {
    let read = &h.ops[r];
    let Some(read_ret) = read.completion.returned_at() else {
        return Vec::new();
    };
    let same_key: Vec<&Operation<_, _>> = h.ops.iter().filter(|op| op.key == read.key).collect();
    let mut values = vec![b"never written".to_vec()];
    for a in &same_key {
        let Some((v, certain)) = written(a) else {
            continue;
        };
        if a.call > read_ret {
            values.push(v.clone());
            continue;
        }
        let Some(a_ret) = a.completion.returned_at().filter(|_| certain) else {
            continue;
        };
        let overwritten = same_key.iter().any(|b| {
            written(b).is_some_and(|(bv, b_certain)| b_certain && bv != v)
                && b.call > a_ret
                && b.completion
                    .returned_at()
                    .is_some_and(|b_ret| b_ret < read.call)
        });
        if overwritten {
            values.push(v.clone());
        }
    }
    values
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        rng_seed: RngSeed::Fixed(0x11ea_41a2),
        ..ProptestConfig::default()
    })]

    #[test]
    fn sequential_runs_with_overlaps_pass_and_an_impossible_read_fails(
        steps in prop::collection::vec((0u8..3, arb_step(), 0u64..35, 0u64..35), 1..40),
        pick_read in any::<prop::sample::Index>(),
        pick_value in any::<prop::sample::Index>(),
    ) {
        let h = generate(&steps);
        let verdict = check_register(&h, &Limits::default());
        prop_assert!(verdict.is_linearizable(), "{}", verdict);

        let reads: Vec<usize> = h.ops.iter().enumerate()
            .filter(|(_, op)| matches!(op.completion.output(), Some(RegisterOutput::Read(_))))
            .map(|(i, _)| i)
            .collect();
        if reads.is_empty() {
            return Ok(());
        }
        let r = reads[pick_read.index(reads.len())];
        let values = impossible_values(&h, r);
        let value = values[pick_value.index(values.len())].clone();
        let mut bad = h.clone();
        bad.ops[r].completion = Completion::Returned {
            at: bad.ops[r].completion.returned_at().unwrap_or(bad.ops[r].call),
            output: RegisterOutput::Read(Some(value.clone())),
        };
        let verdict = check_register(&bad, &Limits::default());
        let v = verdict.violation();
        prop_assert!(v.is_some(), "read #{} of {:?} accepted: {}", r, value, verdict);
        prop_assert_eq!(v.map(|v| v.key.clone()), Some(h.ops[r].key.clone()));
    }
}
