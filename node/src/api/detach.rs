//! docker's detach keys (`ctrl-p,ctrl-q` unless the client names others): typed into an
//! attached container's input, they end the attachment and leave the container running with
//! its input open. The agent looks for them in what a client sends (as dockerd does, so the
//! docker CLI detaches too); reg's cli looks too, to know it detached rather than ended.

/// The keys when a client names none.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// docker's detach keys (`ctrl-p,ctrl-q` by default): the bytes typed are passed on, except a
/// complete sequence, which ends the session and leaves the container running.
pub struct DetachKeys {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachKeys {
    pub fn new(keys: Vec<u8>) -> DetachKeys {
        DetachKeys { keys, matched: 0 }
    }

    /// The whole sequence.
    pub fn sequence(&self) -> &[u8] {
        &self.keys
    }

    /// What of `input` goes to the container, and whether the sequence was completed (what
    /// follows it is dropped). A partial match is held back until it completes or breaks.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.keys.is_empty() {
                out.push(b);
                continue;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.matched = 0;
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// A `--detach-keys` value docker would refuse.
#[derive(Debug, thiserror::Error)]
pub enum DetachKeysError {
    #[error("--detach-keys {spec:?}: unknown key ctrl-{key}")]
    UnknownControl { spec: String, key: String },
    #[error("--detach-keys {spec:?}: use keys like ctrl-p,ctrl-q or a,b")]
    Malformed { spec: String },
}

/// `--detach-keys` (`ctrl-p,ctrl-q`, `ctrl-a,x`, ``): the bytes of the sequence (docker's
/// syntax: `ctrl-X` for a control character, a single character as itself).
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, DetachKeysError> {
    let mut out = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        match part.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => {
                let b = c.as_bytes()[0].to_ascii_uppercase();
                let code = match b {
                    b'@' => 0,
                    b'A'..=b'Z' | b'[' | b'\\' | b']' | b'^' | b'_' => b & 0x1f,
                    _ => {
                        return Err(DetachKeysError::UnknownControl {
                            spec: spec.to_string(),
                            key: c.to_string(),
                        })
                    }
                };
                out.push(code);
            }
            None if part.len() == 1 => out.push(part.as_bytes()[0]),
            _ => {
                return Err(DetachKeysError::Malformed {
                    spec: spec.to_string(),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_pass_everything_else_through_and_hold_back_a_partial_match() {
        let keys = parse_detach_keys("ctrl-p,ctrl-q").expect("keys");
        assert_eq!(keys, [0x10, 0x11]);
        let mut k = DetachKeys::new(keys);
        assert_eq!(k.feed(b"ab\x10"), (b"ab".to_vec(), false));
        // A broken sequence gives the held byte back.
        assert_eq!(k.feed(b"c"), (b"\x10c".to_vec(), false));
        assert_eq!(k.feed(b"x\x10\x10\x11rest"), (b"x\x10".to_vec(), true));
        assert_eq!(parse_detach_keys("a,ctrl-[").expect("keys"), [b'a', 0x1b]);
        assert!(parse_detach_keys("ctrl-~").is_err());
        assert!(parse_detach_keys("abc").is_err());
    }
}
