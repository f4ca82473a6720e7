//! Output capture with a byte cap, shared by every backend so that an output flood is cut at the
//! same byte everywhere.

use crate::result::Truncated;
use crate::spec::{OutputSink, StreamKind};

/// Collects stdout and stderr up to `limit` bytes together, forwarding what it keeps to an
/// optional sink.
pub struct OutputCapture {
    limit: u64,
    /// Whether chunks are kept (else only forwarded: [`OutputCapture::streaming`]).
    keep: bool,
    total: u64,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: Truncated,
    sink: Option<OutputSink>,
}

impl OutputCapture {
    /// A capture of at most `limit` bytes.
    pub fn new(limit: u64, sink: Option<OutputSink>) -> Self {
        Self {
            limit,
            keep: true,
            total: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: Truncated::default(),
            sink,
        }
    }

    /// A capture that keeps nothing and has no limit: every chunk goes to `sink` (whose owner
    /// counts).
    pub fn streaming(sink: Option<OutputSink>) -> Self {
        Self {
            keep: false,
            ..Self::new(u64::MAX, sink)
        }
    }

    /// Keeps what fits under the limit; returns true when this chunk crossed it.
    pub fn push(&mut self, kind: StreamKind, data: &[u8]) -> bool {
        let room = self.limit.saturating_sub(self.total) as usize;
        let take = data.get(..room.min(data.len())).unwrap_or(data);
        self.total = self.total.saturating_add(data.len() as u64);
        let (buf, cut) = match kind {
            StreamKind::Stdout => (&mut self.stdout, &mut self.truncated.stdout),
            StreamKind::Stderr => (&mut self.stderr, &mut self.truncated.stderr),
        };
        if self.keep {
            buf.extend_from_slice(take);
        }
        if let (Some(sink), false) = (self.sink.as_mut(), take.is_empty()) {
            sink(kind, take);
        }
        if take.len() < data.len() {
            *cut = true;
            return true;
        }
        false
    }

    /// (stdout, stderr, which were cut).
    pub fn finish(self) -> (Vec<u8>, Vec<u8>, Truncated) {
        (self.stdout, self.stderr, self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_the_limit_across_streams() {
        let mut c = OutputCapture::new(10, None);
        assert!(!c.push(StreamKind::Stdout, b"12345"));
        assert!(!c.push(StreamKind::Stderr, b"abc"));
        assert!(c.push(StreamKind::Stdout, b"6789"));
        let (out, err, t) = c.finish();
        assert_eq!(
            (out.as_slice(), err.as_slice()),
            (&b"1234567"[..], &b"abc"[..])
        );
        assert!(t.stdout && !t.stderr);
    }
}
