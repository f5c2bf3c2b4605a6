//! Tests of the checker on hand-written key-value histories, plus property tests on generated ones.

use super::*;

type Op = Operation<KvInput<u8, u32>, KvOutput<u32>>;

fn w(c: u64, a: Time, b: Time, key: u8, value: u32) -> Op {
    Operation::completed(c, a, b, KvInput::Write { key, value }, KvOutput::Write)
}
fn r(c: u64, a: Time, b: Time, key: u8, v: Option<u32>) -> Op {
    Operation::completed(c, a, b, KvInput::Read { key }, KvOutput::Read(v))
}
fn cas(c: u64, a: Time, b: Time, key: u8, expected: Option<u32>, new: u32, ok: bool) -> Op {
    Operation::completed(
        c,
        a,
        b,
        KvInput::Cas { key, expected, new },
        KvOutput::Cas(ok),
    )
}
fn w_ind(c: u64, a: Time, key: u8, value: u32) -> Op {
    Operation::indeterminate(c, a, KvInput::Write { key, value })
}

fn ok(h: &[Op]) -> bool {
    check_kv(h).is_linearizable()
}
fn bad(h: &[Op]) -> bool {
    check_kv(h).is_violation()
}

#[test]
fn empty_and_trivial() {
    assert!(ok(&[]));
    assert!(ok(&[r(1, 0, 1, 0, None)]));
    assert!(bad(&[r(1, 0, 1, 0, Some(3))]));
    assert!(ok(&[w(1, 0, 1, 0, 3), r(1, 2, 3, 0, Some(3))]));
}

#[test]
fn stale_read_after_completed_write_is_rejected() {
    let h = [
        w(1, 0, 10, 0, 1),
        w(1, 20, 30, 0, 2),
        r(2, 40, 50, 0, Some(1)),
    ];
    assert!(bad(&h));
    match check_kv(&h) {
        Outcome::NotLinearizable(v) => {
            assert_eq!(v.partition, "key 0");
            assert_eq!(v.cut, 50);
            assert_eq!(v.culprits, vec![h[2].clone()]);
            let report = v.to_string();
            assert!(report.contains("Read"), "{report}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn concurrent_read_may_see_either_value() {
    // The read overlaps the second write: both old and new values are fine.
    for v in [1, 2] {
        assert!(ok(&[
            w(1, 0, 10, 0, 1),
            w(1, 20, 40, 0, 2),
            r(2, 30, 50, 0, Some(v))
        ]));
    }
    // ... but not a value nobody wrote.
    assert!(bad(&[
        w(1, 0, 10, 0, 1),
        w(1, 20, 40, 0, 2),
        r(2, 30, 50, 0, Some(3))
    ]));
}

#[test]
fn reads_must_not_go_back_in_time() {
    // Two reads concurrent with a write, but sequential with each other: new then old is bad.
    let h = [
        w(1, 0, 100, 0, 1),
        r(2, 10, 20, 0, Some(1)),
        r(3, 30, 40, 0, None),
    ];
    assert!(bad(&h));
    let h = [
        w(1, 0, 100, 0, 1),
        r(2, 10, 20, 0, None),
        r(3, 30, 40, 0, Some(1)),
    ];
    assert!(ok(&h));
}

#[test]
fn lost_write_is_rejected() {
    // A completed write that later reads never observe, with no other writer.
    let h = [
        w(1, 0, 10, 0, 1),
        w(2, 20, 30, 0, 2),
        r(3, 40, 50, 0, Some(1)),
        r(3, 60, 70, 0, Some(1)),
    ];
    assert!(bad(&h));
    // A write acknowledged and then read as absent.
    assert!(bad(&[w(1, 0, 10, 0, 1), r(3, 40, 50, 0, None)]));
}

#[test]
fn indeterminate_writes_may_or_may_not_apply() {
    // Never applied.
    assert!(ok(&[
        w(1, 0, 10, 0, 1),
        w_ind(2, 20, 0, 2),
        r(3, 30, 40, 0, Some(1))
    ]));
    // Applied, possibly long after the client gave up.
    assert!(ok(&[
        w(1, 0, 10, 0, 1),
        w_ind(2, 20, 0, 2),
        r(3, 1000, 1010, 0, Some(2))
    ]));
    // Applied then overwritten, observed in between.
    assert!(ok(&[
        w(1, 0, 10, 0, 1),
        w_ind(2, 20, 0, 2),
        r(3, 30, 40, 0, Some(2)),
        w(1, 50, 60, 0, 3),
        r(3, 70, 80, 0, Some(3)),
    ]));
    // But it cannot take effect before it was invoked ...
    assert!(bad(&[
        w(1, 0, 10, 0, 1),
        r(3, 12, 15, 0, Some(2)),
        w_ind(2, 20, 0, 2)
    ]));
    // ... nor take effect twice.
    assert!(bad(&[
        w_ind(2, 0, 0, 2),
        r(3, 10, 20, 0, Some(2)),
        w(1, 30, 40, 0, 1),
        r(3, 50, 60, 0, Some(2)),
    ]));
}

#[test]
fn cas_semantics() {
    assert!(ok(&[
        cas(1, 0, 10, 0, None, 1, true),
        r(2, 20, 30, 0, Some(1))
    ]));
    assert!(bad(&[cas(1, 0, 10, 0, Some(5), 1, true)]));
    assert!(ok(&[
        cas(1, 0, 10, 0, Some(5), 1, false),
        r(2, 20, 30, 0, None)
    ]));
    // Two sequential CAS from the same expected value cannot both succeed.
    let h = [
        w(1, 0, 10, 0, 1),
        cas(1, 20, 30, 0, Some(1), 2, true),
        cas(2, 40, 50, 0, Some(1), 3, true),
    ];
    assert!(bad(&h));
    // Concurrent ones cannot either: only one sees 1.
    let h = [
        w(1, 0, 10, 0, 1),
        cas(1, 20, 50, 0, Some(1), 2, true),
        cas(2, 20, 50, 0, Some(1), 3, true),
    ];
    assert!(bad(&h));
    let h = [
        w(1, 0, 10, 0, 1),
        cas(1, 20, 50, 0, Some(1), 2, true),
        cas(2, 20, 50, 0, Some(1), 3, false),
    ];
    assert!(ok(&h));
    // An indeterminate CAS can explain a value.
    let h = [
        w(1, 0, 10, 0, 1),
        Operation::indeterminate(
            2,
            20,
            KvInput::Cas {
                key: 0,
                expected: Some(1),
                new: 7,
            },
        ),
        r(3, 30, 40, 0, Some(7)),
    ];
    assert!(ok(&h));
}

#[test]
fn keys_are_independent() {
    // Each key alone is fine; together too (locality).
    let h = [
        w(1, 0, 10, 0, 1),
        w(1, 0, 10, 1, 2),
        r(2, 20, 30, 0, Some(1)),
        r(2, 20, 30, 1, Some(2)),
    ];
    assert!(ok(&h));
    // A violation on one key is reported with that key.
    let h = [
        w(1, 0, 10, 0, 1),
        w(1, 0, 10, 1, 2),
        r(2, 20, 30, 0, Some(1)),
        r(2, 20, 30, 1, Some(1)),
    ];
    match check_kv(&h) {
        Outcome::NotLinearizable(v) => assert_eq!(v.partition, "key 1"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn touching_intervals_count_as_concurrent() {
    // The read is invoked at the write's completion time: permissive reading accepts either.
    assert!(ok(&[w(1, 0, 10, 0, 1), r(2, 10, 20, 0, None)]));
    assert!(bad(&[w(1, 0, 10, 0, 1), r(2, 11, 20, 0, None)]));
}

#[test]
fn minimal_prefix_is_reported() {
    // Many fine ops, then one stale read, then more fine ops.
    let mut h = Vec::new();
    for i in 0..20u32 {
        let t = u64::from(i) * 100;
        h.push(w(1, t, t + 10, 0, i));
        h.push(r(2, t + 20, t + 30, 0, Some(i)));
    }
    h.push(r(3, 2500, 2510, 0, Some(3)));
    for i in 20..30u32 {
        let t = u64::from(i) * 100 + 1000;
        h.push(w(1, t, t + 10, 0, i));
    }
    match check_kv(&h) {
        Outcome::NotLinearizable(v) => {
            assert_eq!(v.cut, 2510);
            assert_eq!(v.culprits.len(), 1);
            assert_eq!(v.culprits[0].invoke, 2500);
            assert!(v.prefix.iter().all(|op| op.invoke <= 2510));
        }
        o => panic!("{o:?}"),
    }
}

/// The simulator checks histories of thousands of operations per key; the memoised search
/// must stay near-linear on them (bounded overlap, some indeterminate writes).
#[test]
fn long_histories_are_checked_quickly() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut reg = None;
    let mut h = Vec::new();
    for i in 0..3_000u32 {
        let point = 1_000 + 10 * u64::from(i);
        let (a, b) = (point - rnd(30), point + rnd(30));
        let c = u64::from(i % 5);
        match rnd(20) {
            0..=9 => h.push(r(c, a, b, 0, reg)),
            10..=18 => {
                reg = Some(i);
                if rnd(20) == 0 {
                    h.push(w_ind(c, a, 0, i));
                } else {
                    h.push(w(c, a, b, 0, i));
                }
            }
            _ => h.push(w_ind(c, a, 0, 1_000_000 + i)), // never took effect
        }
    }
    let start = std::time::Instant::now();
    assert!(ok(&h));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn budget_gives_unknown() {
    let mut h = Vec::new();
    for i in 0..16u32 {
        h.push(w_ind(u64::from(i), 0, 0, i));
    }
    h.push(r(99, 10, 20, 0, Some(1000)));
    assert!(matches!(
        check_with_budget(&KvModel::new(), &h, 10),
        Outcome::Unknown { .. }
    ));
    assert!(check_kv(&h).is_violation());
}

mod property {
    use super::*;
    use proptest::prelude::*;

    /// A random program over 3 keys.
    fn program() -> impl Strategy<Value = Vec<(u8, u8, u32)>> {
        prop::collection::vec((0u8..3, 0u8..3, 0u32..4), 1..40)
    }

    /// Run `prog` sequentially, place each op's linearization point at 10*i, and widen its
    /// interval around that point by the given random amounts. Some ops become indeterminate
    /// (whether or not they took effect); some extra writes that never took effect are added.
    fn history(prog: &[(u8, u8, u32)], widen: &[(u64, u64, u8)]) -> Vec<Op> {
        let mut regs: [Option<u32>; 3] = [None; 3];
        let mut h = Vec::new();
        for (i, &(kind, key, v)) in prog.iter().enumerate() {
            let (before, after, flag) = widen[i % widen.len()];
            let point = 1000 + 10 * i as u64;
            let (a, b) = (point - before.min(point), point + after);
            let value = i as u32 * 10 + v;
            let reg = &mut regs[key as usize];
            let (input, output) = match kind {
                0 => (KvInput::Read { key }, KvOutput::Read(*reg)),
                1 => {
                    *reg = Some(value);
                    (KvInput::Write { key, value }, KvOutput::Write)
                }
                _ => {
                    // Expect the right value half the time.
                    let expected = if v % 2 == 0 { *reg } else { Some(v) };
                    let ok = expected == *reg;
                    if ok {
                        *reg = Some(value);
                    }
                    (
                        KvInput::Cas {
                            key,
                            expected,
                            new: value,
                        },
                        KvOutput::Cas(ok),
                    )
                }
            };
            let c = i as u64 % 4;
            if flag % 5 == 0 {
                h.push(Operation::indeterminate(c, a, input));
            } else {
                h.push(Operation::completed(c, a, b, input, output));
            }
            if flag % 7 == 0 {
                // A write that timed out and never took effect.
                h.push(w_ind(9, a, key, 1_000_000 + i as u32));
            }
        }
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]

        #[test]
        fn sequential_executions_with_overlap_are_accepted(
            prog in program(),
            widen in prop::collection::vec((0u64..40, 0u64..40, any::<u8>()), 1..40),
        ) {
            let h = history(&prog, &widen);
            let out = check_kv(&h);
            prop_assert!(out.is_linearizable(), "{:?}", out);
        }

        #[test]
        fn corrupted_sequential_read_is_rejected(
            prog in program(),
            victim in any::<prop::sample::Index>(),
        ) {
            // No overlap, nothing indeterminate: the only linearization is the real order, so
            // a read returning anything else must be rejected.
            let mut h = history(&prog, &[(0, 0, 1)]);
            let reads: Vec<usize> = h.iter().enumerate()
                .filter(|(_, op)| matches!(op.input, KvInput::Read { .. }))
                .map(|(i, _)| i).collect();
            prop_assume!(!reads.is_empty());
            let i = reads[victim.index(reads.len())];
            let wrong = match &h[i].output {
                Some(KvOutput::Read(Some(v))) => if v % 2 == 0 { None } else { Some(v + 1) },
                _ => Some(12345),
            };
            h[i].output = Some(KvOutput::Read(wrong));
            prop_assert!(check_kv(&h).is_violation());
        }
    }
}
