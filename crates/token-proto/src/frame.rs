//! Sans-I/O line framing with a size cap, shared by the blocking client and
//! the async daemon. The cap is enforced while bytes arrive, so a peer that
//! never sends a newline costs at most [`MAX_LINE`] bytes of memory.
//!
//! A line may hold a secret (a token in an answer, a pasted token in a
//! request): the buffer grows without leaving copies behind, is wiped when
//! a line is dropped or the decoder is, and lines come out as [`Line`]s,
//! wiped when dropped.

use crate::{extend_wiped, wipe, Line, MAX_LINE};

/// One unit out of the decoder.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, newline (and a trailing `\r`) removed.
    Line(Line),
    /// A line went past [`MAX_LINE`]; its bytes up to the next newline are dropped.
    TooLong,
}

/// Splits a byte stream into lines of at most `limit` bytes.
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    limit: usize,
    /// Inside an oversized line: drop bytes until the next newline.
    discarding: bool,
}

impl Drop for LineDecoder {
    /// A partial line (a peer gone mid-line) is wiped too.
    fn drop(&mut self) {
        wipe(&mut self.buf);
    }
}

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::new(MAX_LINE)
    }
}

impl LineDecoder {
    pub fn new(limit: usize) -> Self {
        LineDecoder {
            buf: Vec::new(),
            limit,
            discarding: false,
        }
    }

    /// Feeds bytes in; complete frames are appended to `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Frame>) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let (segment, rest) = data.split_at(nl);
            data = &rest[1..];
            if self.discarding {
                self.discarding = false;
            } else if self.buf.len() + segment.len() > self.limit {
                self.clear();
                out.push(Frame::TooLong);
            } else {
                extend_wiped(&mut self.buf, segment, self.limit);
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                out.push(Frame::Line(Line::new(line)));
            }
        }
        if self.discarding {
            return;
        }
        if self.buf.len() + data.len() > self.limit {
            self.clear();
            self.discarding = true;
            out.push(Frame::TooLong);
        } else {
            extend_wiped(&mut self.buf, data, self.limit);
        }
    }

    fn clear(&mut self) {
        wipe(&mut self.buf);
        self.buf.clear();
    }

    /// True when a partial line is buffered (the peer is mid-line).
    pub fn is_mid_line(&self) -> bool {
        !self.buf.is_empty() || self.discarding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(bytes: &[u8]) -> Frame {
        Frame::Line(Line::new(bytes.to_vec()))
    }

    fn run(limit: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut d = LineDecoder::new(limit);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        let out = run(100, &[b"ab", b"c\nde\r\n", b"f"]);
        assert_eq!(out, vec![line(b"abc"), line(b"de")]);
    }

    #[test]
    fn oversized_line_reported_once_and_skipped() {
        let out = run(4, &[b"12345", b"678", b"9\nok\n"]);
        assert_eq!(out, vec![Frame::TooLong, line(b"ok")]);
    }

    #[test]
    fn oversized_line_in_one_chunk() {
        let out = run(4, &[b"123456\nok\n"]);
        assert_eq!(out, vec![Frame::TooLong, line(b"ok")]);
    }

    #[test]
    fn exactly_the_limit_is_fine() {
        let out = run(4, &[b"1234\n"]);
        assert_eq!(out, vec![line(b"1234")]);
    }

    /// A request line (a pasted token) fed in small pieces, the way a slow
    /// peer sends it, then dropped: no freed block holds it, neither the
    /// buffer's smaller blocks as it grew nor the line, nor a partial line
    /// left in a dropped decoder.
    #[test]
    fn no_copy_of_a_line_is_left_in_freed_memory() {
        use crate::wipe::leak_check::{freed_with_marker, MARKER};
        let found = freed_with_marker(|| {
            // Made at its full size: the test's own growth leaves nothing.
            let mut text = Vec::with_capacity(4096);
            text.extend_from_slice(b"{\"v\":1,\"op\":\"paste\",\"token\":\"");
            text.extend_from_slice(MARKER);
            text.extend_from_slice(&[b'x'; 3000]);
            text.extend_from_slice(b"\"}\n");
            let mut d = LineDecoder::default();
            let mut out = Vec::new();
            for piece in text.chunks(7) {
                d.feed(piece, &mut out);
            }
            assert_eq!(out.len(), 1);
            drop(out);
            // A partial line left behind when the peer goes.
            d.feed(&text[..text.len() - 1], &mut Vec::new());
            drop(d);
            wipe(&mut text);
        });
        assert_eq!(found, 0);
    }
}
