//! The register model: one key holding a byte string or nothing.

use super::{check, show, ConcurrentHistory, Limits, Model, Verdict};
use crate::check::history::Value;

/// What a client asked of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    /// Read the key.
    Read,
    /// Write `value` to the key.
    Write(Value),
    /// Write `new` if the key holds `expected` (`None`: absent).
    CompareAndSet {
        /// What the key must hold.
        expected: Option<Value>,
        /// What to write then.
        new: Value,
    },
}

/// What a client was answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// A read's value (`None`: absent).
    Read(Option<Value>),
    /// A write was acknowledged.
    Write,
    /// Whether a compare-and-set wrote.
    CompareAndSet(bool),
}

/// A history of register operations.
pub type RegisterHistory = ConcurrentHistory<RegisterInput, RegisterOutput>;

/// A per-key register, absent at first. Its state is the value the key holds.
///
/// An answer of the wrong kind (a read answered as a write) is never legal, so such an
/// operation shows up as the one that could not be placed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Register;

impl Model for Register {
    type State = Option<Value>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Option<Value> {
        None
    }

    fn step(
        &self,
        state: &Option<Value>,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<Option<Value>> {
        match (input, output) {
            (RegisterInput::Read, Some(RegisterOutput::Read(seen))) => {
                (seen == state).then(|| state.clone())
            }
            (RegisterInput::Write(v), Some(RegisterOutput::Write) | None) => Some(Some(v.clone())),
            (
                RegisterInput::CompareAndSet { expected, new },
                Some(RegisterOutput::CompareAndSet(true)) | None,
            ) => (expected == state).then(|| Some(new.clone())),
            (
                RegisterInput::CompareAndSet { expected, .. },
                Some(RegisterOutput::CompareAndSet(false)),
            ) => (expected != state).then(|| state.clone()),
            // An unknown read (dropped before the search) or an answer of the wrong kind.
            _ => None,
        }
    }

    fn is_read_only(&self, input: &RegisterInput) -> bool {
        matches!(input, RegisterInput::Read)
    }

    fn describe_operation(&self, input: &RegisterInput, output: Option<&RegisterOutput>) -> String {
        let asked = match input {
            RegisterInput::Read => "read".to_string(),
            RegisterInput::Write(v) => format!("write {}", show(v)),
            RegisterInput::CompareAndSet { expected, new } => {
                format!("cas {} -> {}", show_opt(expected.as_deref()), show(new))
            }
        };
        let answered = match output {
            None => "outcome unknown".to_string(),
            Some(RegisterOutput::Read(v)) => show_opt(v.as_deref()),
            Some(RegisterOutput::Write) => "ok".to_string(),
            Some(RegisterOutput::CompareAndSet(done)) => done.to_string(),
        };
        format!("{asked}: {answered}")
    }

    fn describe_state(&self, state: &Option<Value>) -> String {
        show_opt(state.as_deref())
    }
}

fn show_opt(value: Option<&[u8]>) -> String {
    value.map_or_else(|| "<absent>".to_string(), show)
}

/// Checks a register history ([`check`] with [`Register`]).
pub fn check_register(history: &RegisterHistory, limits: &Limits) -> Verdict {
    check(&Register, history, limits)
}
