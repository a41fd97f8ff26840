//! Compose's variable interpolation in string values: `$VAR`, `${VAR}`, `${VAR:-default}`
//! (unset or empty), `${VAR-default}` (unset), `${VAR:?message}` / `${VAR?message}` (an error),
//! `${VAR:+alt}` / `${VAR+alt}`, `$$` for a literal `$`. Defaults may hold interpolations
//! themselves; nesting is bounded.

/// A value that cannot be interpolated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InterpolateError {
    #[error("required variable {name} is missing a value: {message}")]
    Required { name: String, message: String },
    #[error("invalid interpolation format in {0:?}: close each ${{ with }}, write $$ for a $")]
    Format(String),
    #[error("interpolation nested more than {MAX_DEPTH} levels deep in {0:?}")]
    TooDeep(String),
}

const MAX_DEPTH: usize = 16;

/// `s` with every variable replaced from `lookup` (an unset variable without a default is "").
pub fn interpolate(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    expand(s, lookup, 0)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn expand(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, InterpolateError> {
    if depth > MAX_DEPTH {
        return Err(InterpolateError::TooDeep(s.to_string()));
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                // The matching brace, counting nested `${`.
                let mut level = 1;
                let mut j = i + 2;
                while j < chars.len() {
                    match chars[j] {
                        '{' if chars.get(j.wrapping_sub(1)) == Some(&'$') => level += 1,
                        '}' => {
                            level -= 1;
                            if level == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(InterpolateError::Format(s.to_string()));
                }
                let inner: String = chars[i + 2..j].iter().collect();
                out.push_str(&braced(&inner, s, lookup, depth)?);
                i = j + 1;
            }
            Some(&n) if is_name_start(n) => {
                let mut j = i + 1;
                while j < chars.len() && is_name(chars[j]) {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(&lookup(&name).unwrap_or_default());
                i = j;
            }
            // A lone `$` (end of string, or before a character no name starts with) stays.
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The body of `${…}`: a name, then nothing or one of `:-` `-` `:?` `?` `:+` `+` and a word.
fn braced(
    inner: &str,
    whole: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, InterpolateError> {
    let name_len = inner
        .char_indices()
        .find(|(_, c)| !is_name(*c))
        .map_or(inner.len(), |(k, _)| k);
    let (name, rest) = inner.split_at(name_len);
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(InterpolateError::Format(whole.to_string()));
    }
    let value = lookup(name);
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let word = |w: &str| expand(w, lookup, depth + 1);
    let (op, w) = if let Some(w) = rest.strip_prefix(":-") {
        (":-", w)
    } else if let Some(w) = rest.strip_prefix(":?") {
        (":?", w)
    } else if let Some(w) = rest.strip_prefix(":+") {
        (":+", w)
    } else if let Some(w) = rest.strip_prefix('-') {
        ("-", w)
    } else if let Some(w) = rest.strip_prefix('?') {
        ("?", w)
    } else if let Some(w) = rest.strip_prefix('+') {
        ("+", w)
    } else if rest.is_empty() {
        ("", "")
    } else {
        return Err(InterpolateError::Format(whole.to_string()));
    };
    let required = |ok: bool| -> Result<String, InterpolateError> {
        if ok {
            Ok(value.clone().unwrap_or_default())
        } else {
            Err(InterpolateError::Required {
                name: name.to_string(),
                message: word(w)?,
            })
        }
    };
    match op {
        "" => Ok(value.clone().unwrap_or_default()),
        ":-" if !non_empty => word(w),
        "-" if !set => word(w),
        ":?" => required(non_empty),
        "?" => required(set),
        ":+" if non_empty => word(w),
        "+" if set => word(w),
        ":+" | "+" => Ok(String::new()),
        _ => Ok(value.clone().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("v".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    fn i(s: &str) -> Result<String, InterpolateError> {
        interpolate(s, &env)
    }

    #[test]
    fn the_specs_forms() {
        assert_eq!(i("a $SET b ${SET}c").as_deref(), Ok("a v b vc"));
        assert_eq!(i("${UNSET}").as_deref(), Ok(""));
        assert_eq!(
            i("${UNSET:-d} ${EMPTY:-d} ${SET:-d}").as_deref(),
            Ok("d d v")
        );
        assert_eq!(i("${UNSET-d} ${EMPTY-d}").as_deref(), Ok("d "));
        assert_eq!(
            i("${SET:+alt} ${EMPTY:+alt} ${EMPTY+alt}").as_deref(),
            Ok("alt  alt")
        );
        assert_eq!(i("$$SET $$").as_deref(), Ok("$SET $"));
        assert_eq!(i("${UNSET:-${PORT}}:80").as_deref(), Ok("8080:80"));
        assert_eq!(i("cost: 5$").as_deref(), Ok("cost: 5$"));
        assert_eq!(
            i("${EMPTY:?give it}"),
            Err(InterpolateError::Required {
                name: "EMPTY".into(),
                message: "give it".into()
            })
        );
        assert_eq!(i("${EMPTY?give it}").as_deref(), Ok(""));
        assert!(matches!(
            i("${UNSET?x}"),
            Err(InterpolateError::Required { .. })
        ));
        assert!(matches!(i("${OPEN"), Err(InterpolateError::Format(_))));
        assert!(matches!(i("${1BAD}"), Err(InterpolateError::Format(_))));
        let deep = format!("{}x{}", "${A:-".repeat(40), "}".repeat(40));
        assert!(matches!(i(&deep), Err(InterpolateError::TooDeep(_))));
    }
}
