//! Sans-I/O line framing with a size cap, shared by the blocking client and
//! the async daemon. The cap is enforced while bytes arrive, so a peer that
//! never sends a newline costs at most [`MAX_LINE`] bytes of memory.

use crate::MAX_LINE;

/// One unit out of the decoder.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, newline (and a trailing `\r`) removed.
    Line(Vec<u8>),
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
                self.buf.clear();
                out.push(Frame::TooLong);
            } else {
                self.buf.extend_from_slice(segment);
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                out.push(Frame::Line(line));
            }
        }
        if self.discarding {
            return;
        }
        if self.buf.len() + data.len() > self.limit {
            self.buf.clear();
            self.discarding = true;
            out.push(Frame::TooLong);
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    /// True when a partial line is buffered (the peer is mid-line).
    pub fn is_mid_line(&self) -> bool {
        !self.buf.is_empty() || self.discarding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            out,
            vec![Frame::Line(b"abc".to_vec()), Frame::Line(b"de".to_vec())]
        );
    }

    #[test]
    fn oversized_line_reported_once_and_skipped() {
        let out = run(4, &[b"12345", b"678", b"9\nok\n"]);
        assert_eq!(out, vec![Frame::TooLong, Frame::Line(b"ok".to_vec())]);
    }

    #[test]
    fn oversized_line_in_one_chunk() {
        let out = run(4, &[b"123456\nok\n"]);
        assert_eq!(out, vec![Frame::TooLong, Frame::Line(b"ok".to_vec())]);
    }

    #[test]
    fn exactly_the_limit_is_fine() {
        let out = run(4, &[b"1234\n"]);
        assert_eq!(out, vec![Frame::Line(b"1234".to_vec())]);
    }
}
