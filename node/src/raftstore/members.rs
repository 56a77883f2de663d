//! The shard's member directory: every member's addresses, carried in the context of each
//! membership change and kept in the replicated state, so that every replica learns a new
//! member's Raft address when it applies the change (and a restart or a snapshot keeps it).
//!
//! ```text
//!   leader: ConfChangeV2 { changes, context = MemberDirectory::encode(members after the change) }
//!        │ committed
//!        ▼ every replica's KvApply::apply_entry
//!   raft-state "strata/shard/<id>/r/members" = context   (one unlogged batch with applied = i;
//!        │                                                 in snapshots like every /r/ value)
//!        ▼ publish
//!   ShardState::members()  and  AddressBook::set / remove  (the transport dials the new member)
//! ```
//!
//! The directory always lists the whole membership as the leader knew it after the change
//! (the initial members' addresses come from their configuration and enter the directory with
//! the first change), so applying one replaces the previous one. Encoding, little-endian:
//! `version u8 = 1 | count u32 | count × (node id u64 | raft str | grpc str | incarnation str)`
//! with each `str` a `u16` length and UTF-8 bytes.

use std::collections::BTreeMap;

use super::error::{RaftStoreError, Result};

const VERSION: u8 = 1;

/// Where one member listens, and which incarnation of its data directory it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberAddr {
    /// Its Raft (internal) address, `host:port`.
    pub raft: String,
    /// Its client (gRPC) address, `host:port`; empty when unknown.
    pub grpc: String,
    /// The incarnation of its data directory (`identity.json`); empty when unknown.
    pub incarnation: String,
}

/// Node id -> addresses of every member of a shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberDirectory(pub BTreeMap<u64, MemberAddr>);

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let len = u16::try_from(s.len())
        .map_err(|_| RaftStoreError::Invalid(format!("member address {s:?} is too long")))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(RaftStoreError::Corruption(
                "member directory is truncated".into(),
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(w))
    }

    fn str(&mut self) -> Result<String> {
        let mut w = [0u8; 2];
        w.copy_from_slice(self.take(2)?);
        let len = usize::from(u16::from_le_bytes(w));
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| RaftStoreError::Corruption("member address is not UTF-8".into()))
    }
}

impl MemberDirectory {
    /// The wire (and stored) form.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let count = u32::try_from(self.0.len())
            .map_err(|_| RaftStoreError::Invalid("too many members".into()))?;
        let mut out = vec![VERSION];
        out.extend_from_slice(&count.to_le_bytes());
        for (id, m) in &self.0 {
            out.extend_from_slice(&id.to_le_bytes());
            put_str(&mut out, &m.raft)?;
            put_str(&mut out, &m.grpc)?;
            put_str(&mut out, &m.incarnation)?;
        }
        Ok(out)
    }

    /// Parses [`MemberDirectory::encode`]'s output; damage is `Corruption`.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader(data);
        let version = r.take(1)?[0];
        if version != VERSION {
            return Err(RaftStoreError::Corruption(format!(
                "member directory version {version}"
            )));
        }
        let mut w = [0u8; 4];
        w.copy_from_slice(r.take(4)?);
        let count = u32::from_le_bytes(w);
        let mut members = BTreeMap::new();
        for _ in 0..count {
            let id = r.u64()?;
            let m = MemberAddr {
                raft: r.str()?,
                grpc: r.str()?,
                incarnation: r.str()?,
            };
            members.insert(id, m);
        }
        if !r.0.is_empty() {
            return Err(RaftStoreError::Corruption(
                "member directory has trailing bytes".into(),
            ));
        }
        Ok(MemberDirectory(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_round_trips_and_damage_is_refused() {
        let mut d = MemberDirectory::default();
        d.0.insert(
            1,
            MemberAddr {
                raft: "a:1".into(),
                grpc: "a:2".into(),
                incarnation: "x".into(),
            },
        );
        d.0.insert(7, MemberAddr::default());
        let bytes = d.encode().unwrap();
        assert_eq!(MemberDirectory::decode(&bytes).unwrap(), d);
        for cut in 0..bytes.len() {
            assert!(MemberDirectory::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(MemberDirectory::decode(&longer).is_err());
        let mut wrong = bytes;
        wrong[0] = 9;
        assert!(MemberDirectory::decode(&wrong).is_err());
    }
}
