//! The wire form of transactional messages: a transaction's state, its description, and a
//! producer's decision.
//!
//! Storing half messages and checking back with producers is the broker's job; this module
//! only says how the values travel. Layouts are in `docs/protocol.md` §5.

use crate::error::DecodeError;
use crate::wire::{Reader, put_string};
use bytes::{BufMut, BytesMut};

/// Where an undecided transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionState {
    /// Accepting half messages; waiting for a decision. Tag 0.
    Open,
    /// Decided to commit; its messages are being appended (redone after a crash). Tag 1.
    Committing,
}

impl TransactionState {
    pub(crate) fn put(self, buf: &mut BytesMut) {
        buf.put_u8(match self {
            TransactionState::Open => 0,
            TransactionState::Committing => 1,
        });
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<TransactionState, DecodeError> {
        Ok(
            match reader.tag(1, "transaction state (0 open, 1 committing)")? {
                0 => TransactionState::Open,
                _ => TransactionState::Committing,
            },
        )
    }
}

/// A producer's answer to a check-back, or an operator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Make every half message visible. Tag 0.
    Commit,
    /// Discard them. Tag 1.
    Rollback,
    /// The local transaction's outcome is not known yet: ask again later. Tag 2.
    Unknown,
}

impl Decision {
    pub(crate) fn put(self, buf: &mut BytesMut) {
        buf.put_u8(match self {
            Decision::Commit => 0,
            Decision::Rollback => 1,
            Decision::Unknown => 2,
        });
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<Decision, DecodeError> {
        Ok(
            match reader.tag(2, "decision (0 commit, 1 rollback, 2 unknown)")? {
                0 => Decision::Commit,
                1 => Decision::Rollback,
                _ => Decision::Unknown,
            },
        )
    }
}

/// An undecided transaction, as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionInfo {
    /// Its id.
    pub id: u64,
    /// The producer group whose live producers are asked about it.
    pub producer_group: String,
    /// Where it stands.
    pub state: TransactionState,
    /// When it began, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Check-backs sent so far.
    pub checks: u32,
    /// Half-message batches sent so far.
    pub parts: u32,
}

impl TransactionInfo {
    /// id, name length, state, time, two counts.
    pub(crate) const MINIMUM_BYTES: usize = 8 + 4 + 1 + 8 + 4 + 4;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.put_u64_le(self.id);
        put_string(buf, &self.producer_group);
        self.state.put(buf);
        buf.put_i64_le(self.created_ms);
        buf.put_u32_le(self.checks);
        buf.put_u32_le(self.parts);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<TransactionInfo, DecodeError> {
        Ok(TransactionInfo {
            id: reader.u64("transaction id")?,
            producer_group: reader.string("producer group")?,
            state: TransactionState::read(reader)?,
            created_ms: reader.i64("transaction creation time")?,
            checks: reader.u32("transaction check count")?,
            parts: reader.u32("transaction part count")?,
        })
    }
}
