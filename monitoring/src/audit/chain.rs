//! The hash chain: how a record becomes a sealed line and how a line is opened again.
//!
//! A line is one JSON object: `{"seq":N,"ts":"…","prev":"<hex>", <record fields>,"hash":"<hex>"}`.
//! `hash` is the SHA-256 (or HMAC-SHA256) of every byte of the line before `,"hash":"`, so it
//! covers `seq`, `ts`, `prev` and the record; `prev` is the `hash` of the line before (64 zeros
//! for the first line of a log). The hash is the last field so that a reader finds the sealed
//! bytes without re-serialising anything.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::{AuditRecord, MacKind};
use crate::util::{hex, unhex32};

/// `prev` of the first line of a log.
pub const GENESIS: [u8; 32] = [0; 32];

const HASH_KEY: &str = ",\"hash\":\"";
/// Bytes after the sealed part: `,"hash":"` + 64 hex digits + `"}`.
const SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;

/// Seals lines: plain SHA-256 or HMAC-SHA256 under a key.
#[derive(Clone)]
pub struct Sealer {
    hmac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("mac", &self.kind()).finish()
    }
}

impl Sealer {
    /// Plain SHA-256 without a key, HMAC-SHA256 with one (any length is accepted by HMAC; the
    /// builder asks for at least 16 bytes).
    pub fn new(key: Option<&[u8]>) -> Self {
        Self {
            hmac: key.and_then(|k| Hmac::<Sha256>::new_from_slice(k).ok()),
        }
    }

    /// Which algorithm.
    pub fn kind(&self) -> MacKind {
        if self.hmac.is_some() {
            MacKind::HmacSha256
        } else {
            MacKind::Sha256
        }
    }

    /// The seal of `body`.
    pub fn digest(&self, body: &[u8]) -> [u8; 32] {
        match &self.hmac {
            Some(mac) => {
                let mut m = mac.clone();
                m.update(body);
                m.finalize().into_bytes().into()
            }
            None => Sha256::digest(body).into(),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    seq: u64,
    ts: &'a str,
    prev: String,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

/// Serialises `record` as line number `seq` of the chain after `prev`: the line (without its
/// newline) and its hash.
pub fn seal(
    sealer: &Sealer,
    seq: u64,
    ts: &str,
    prev: &[u8; 32],
    record: &AuditRecord,
) -> Result<(String, [u8; 32]), serde_json::Error> {
    let mut line = serde_json::to_string(&Envelope {
        seq,
        ts,
        prev: hex(prev),
        record,
    })?;
    // The object's closing brace goes; the hash closes it again.
    line.pop();
    let hash = sealer.digest(line.as_bytes());
    line.push_str(HASH_KEY);
    line.push_str(&hex(&hash));
    line.push_str("\"}");
    Ok((line, hash))
}

/// The sealed part of a line and the hash it claims, when the line has the sealed shape.
pub fn split(line: &str) -> Option<(&str, [u8; 32])> {
    if line.len() < SUFFIX_LEN || !line.ends_with("\"}") {
        return None;
    }
    let cut = line.len() - SUFFIX_LEN;
    let (body, suffix) = (line.get(..cut)?, line.get(cut..)?);
    let digits = suffix.strip_prefix(HASH_KEY)?.strip_suffix("\"}")?;
    Some((body, unhex32(digits)?))
}

/// One line read back: the envelope and the record.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuditLine {
    /// Sequence number (1 for a log's first line, then +1 per line, across files).
    pub seq: u64,
    /// When it was written (RFC 3339, UTC).
    pub ts: String,
    /// Hash of the line before, hex.
    pub prev: String,
    /// This line's hash, hex.
    pub hash: String,
    /// The record.
    #[serde(flatten)]
    pub record: AuditRecord,
}

impl AuditLine {
    /// Parses one line (without checking its seal: that is [`verify`](super::verify)'s job).
    pub fn parse(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_sealed_line_opens_and_parses() {
        let s = Sealer::new(None);
        let rec = AuditRecord::LogStart {
            version: 1,
            mac: MacKind::Sha256,
        };
        let (line, hash) = seal(&s, 1, "1970-01-01T00:00:00.000Z", &GENESIS, &rec).unwrap();
        assert!(line.starts_with("{\"seq\":1,\"ts\":\"1970-01-01T00:00:00.000Z\",\"prev\":\"0000"));
        let (body, claimed) = split(&line).unwrap();
        assert_eq!(claimed, hash);
        assert_eq!(s.digest(body.as_bytes()), hash);
        let parsed = AuditLine::parse(&line).unwrap();
        assert_eq!(parsed.seq, 1);
        assert_eq!(parsed.record, rec);
        assert_eq!(parsed.hash, hex(&hash));
    }

    #[test]
    fn hmac_seals_differ_by_key() {
        let rec = AuditRecord::LogClosed;
        let a = seal(
            &Sealer::new(Some(b"0123456789abcdef")),
            2,
            "t",
            &GENESIS,
            &rec,
        )
        .unwrap();
        let b = seal(
            &Sealer::new(Some(b"0123456789abcdeX")),
            2,
            "t",
            &GENESIS,
            &rec,
        )
        .unwrap();
        let c = seal(&Sealer::new(None), 2, "t", &GENESIS, &rec).unwrap();
        assert_ne!(a.1, b.1);
        assert_ne!(a.1, c.1);
    }
}
