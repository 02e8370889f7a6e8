//! Finding where a chunked message body ends without decoding it: the express lane relays a
//! `Transfer-Encoding: chunked` body to the client byte for byte (both hops are HTTP/1.1, so the
//! framing, chunk extensions and trailers can stay as the upstream wrote them) and only needs to
//! know when the last chunk and the trailers are through.

/// A malformed chunked body.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Longest chunk-size line we accept, extensions included; a real one is a few bytes.
const MAX_SIZE_LINE: usize = 4096;
/// Longest trailer section we accept.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` counts them.
    Size,
    /// After the size: `;name=value` extensions (or whitespace) up to CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Scans a chunked body as it passes; see [`Scanner::scan`].
#[derive(Debug)]
pub struct Scanner {
    state: State,
    size: u64,
    digits: usize,
    /// Bytes of the current size line or of the trailers, against the limits above.
    line: usize,
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner { state: State::Size, size: 0, digits: 0, line: 0 }
    }
}

impl Scanner {
    /// Consumes the next bytes of the body. Returns how many of them belong to it: all of them,
    /// or fewer when the body ends inside `data` (the rest is whatever follows on the
    /// connection).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < data.len() {
            if self.state == State::Data {
                // Chunk data is skipped in bulk, not looked at.
                let n = (data.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match self.state {
                State::Size => {
                    self.line += 1;
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            self.digits += 1;
                            // 15 hex digits is far beyond any real chunk and cannot overflow.
                            if self.digits > 15 {
                                return Err(Malformed);
                            }
                            self.size = self.size * 16 + u64::from((b as char).to_digit(16).expect("a hex digit"));
                            State::Size
                        }
                        b';' | b' ' | b'\t' if self.digits > 0 => State::Extension,
                        b'\r' if self.digits > 0 => State::SizeLf,
                        _ => return Err(Malformed),
                    }
                }
                State::Extension => {
                    self.line += 1;
                    if self.line > MAX_SIZE_LINE {
                        return Err(Malformed);
                    }
                    match b {
                        b'\r' => State::SizeLf,
                        b'\n' => return Err(Malformed),
                        _ => State::Extension,
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(Malformed);
                    }
                    self.line = 0;
                    if self.size == 0 { State::TrailerStart } else { State::Data }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.digits = 0;
                    State::Size
                }
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    // A bare LF is an empty line to a lenient client, whose body would end
                    // there while the relay read on (found by the `chunked` fuzz target).
                    b'\n' => return Err(Malformed),
                    _ => self.trailer_byte()?,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(Malformed),
                    _ => self.trailer_byte()?,
                },
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::EndLf if b == b'\n' => State::Done,
                State::Done => {
                    // The body ended with the previous byte.
                    return Ok(i - 1);
                }
                _ => return Err(Malformed),
            };
            if self.state == State::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }

    fn trailer_byte(&mut self) -> Result<State, Malformed> {
        self.line += 1;
        if self.line > MAX_TRAILERS { Err(Malformed) } else { Ok(State::TrailerLine) }
    }

    /// The last chunk and the trailers have been seen.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; returns the body's length as the scanner saw it.
    fn scan_in_steps(body: &[u8], step: usize) -> Result<usize, Malformed> {
        let mut s = Scanner::default();
        let mut taken = 0;
        for piece in body.chunks(step) {
            let n = s.scan(piece)?;
            taken += n;
            if s.done() {
                return Ok(taken);
            }
            assert_eq!(n, piece.len());
        }
        Ok(taken)
    }

    #[test]
    fn finds_the_end_however_the_bytes_arrive() {
        let body = b"5\r\nhello\r\n1A;ext=\"x\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\nx-more: 2\r\n\r\n";
        let mut with_next = body.to_vec();
        with_next.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for step in 1..=with_next.len() {
            assert_eq!(scan_in_steps(&with_next, step), Ok(body.len()), "step {step}");
        }
        assert_eq!(scan_in_steps(b"0\r\n\r\n", 1), Ok(5));
        assert_eq!(scan_in_steps(b"000\r\n\r\nrest", 64), Ok(7));
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let mut s = Scanner::default();
        assert_eq!(s.scan(b"5\r\nhel"), Ok(6));
        assert!(!s.done());
        assert_eq!(s.scan(b"lo\r\n0\r\n"), Ok(7));
        assert!(!s.done(), "the final CRLF is missing");
        assert_eq!(s.scan(b"\r\n"), Ok(2));
        assert!(s.done());
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r\r",
            b"1234567890abcdef0\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
            b"0\r\n\n\r\n\r\n",
            b"0\r\nx: 1\r\n\n\r\n",
            b"0\r\n\r\r",
            b";ext\r\n",
        ] {
            assert_eq!(scan_in_steps(bad, 1), Err(Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
        let long_extension = [b"1;".to_vec(), vec![b'a'; MAX_SIZE_LINE + 1], b"\r\n".to_vec()].concat();
        assert_eq!(scan_in_steps(&long_extension, 100), Err(Malformed));
    }
}
