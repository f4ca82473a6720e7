//! Output as text chunks for streaming surfaces (the server's `chunk` events, the CLI's
//! `exec --json --stream` lines): bytes from an [`OutputSink`](crate::OutputSink) become UTF-8
//! text without splitting a character across two chunks.

use serde::Serialize;

use crate::spec::StreamKind;

/// One piece of output as it happened: `{"stream": "stdout", "text": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputChunk {
    /// Which stream it came from.
    pub stream: StreamKind,
    /// The text (invalid UTF-8 replaced by U+FFFD).
    pub text: String,
}

/// Splits a stream's bytes into text, keeping an incomplete UTF-8 sequence at the end for the
/// next call (so a character split across two reads is not garbled).
#[derive(Debug, Default)]
pub struct Utf8Chunker {
    pending: Vec<u8>,
}

impl Utf8Chunker {
    /// The text ready to send after `data` (invalid sequences become U+FFFD).
    pub fn push(&mut self, data: &[u8]) -> String {
        self.pending.extend_from_slice(data);
        let cut = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An incomplete sequence at the end waits for more; anything else is replaced.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(cut);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// A chunker per stream: what a streaming surface keeps for one run.
#[derive(Debug, Default)]
pub struct OutputChunks {
    stdout: Utf8Chunker,
    stderr: Utf8Chunker,
}

impl OutputChunks {
    /// The chunk ready after `data` arrived on `stream`, if any text is complete.
    pub fn push(&mut self, stream: StreamKind, data: &[u8]) -> Option<OutputChunk> {
        let text = match stream {
            StreamKind::Stdout => self.stdout.push(data),
            StreamKind::Stderr => self.stderr.push(data),
        };
        (!text.is_empty()).then_some(OutputChunk { stream, text })
    }

    /// The rest of each stream at the end of the run (stdout first).
    pub fn finish(&mut self) -> Vec<OutputChunk> {
        [
            (StreamKind::Stdout, self.stdout.finish()),
            (StreamKind::Stderr, self.stderr.finish()),
        ]
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .map(|(stream, text)| OutputChunk { stream, text })
        .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let mut c = Utf8Chunker::default();
        let e = "é".as_bytes();
        assert_eq!(c.push(&[b'a', e[0]]), "a");
        assert_eq!(c.push(&[e[1], b'b']), "éb");
        assert_eq!(c.push(&[0xff, b'c']), "\u{fffd}c");
        assert_eq!(c.push(&[e[0]]), "");
        assert_eq!(c.finish(), "\u{fffd}");
    }

    #[test]
    fn chunks_per_stream_and_their_json() {
        let mut c = OutputChunks::default();
        let e = "é".as_bytes();
        assert_eq!(c.push(StreamKind::Stdout, &[e[0]]), None);
        let err = c.push(StreamKind::Stderr, b"x").unwrap();
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"stream":"stderr","text":"x"}"#
        );
        assert_eq!(c.push(StreamKind::Stdout, &[e[1]]).unwrap().text, "é");
        c.push(StreamKind::Stdout, &[e[0]]);
        let tail = c.finish();
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].stream, StreamKind::Stdout);
    }
}
