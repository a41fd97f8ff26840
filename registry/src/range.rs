//! The byte ranges of the distribution API, parsed from header values: `Range: bytes=a-b` on
//! blob GETs (also `a-` and `-n`, one range only) and `Content-Range: a-b` on upload chunks
//! (`bytes a-b/total` and `bytes=a-b` accepted too). Pure, bounded arithmetic: no value makes
//! a length wrap.

/// A `Range` header against a blob of `size` bytes: the inclusive `(start, end)` to send, or
/// `None` when it cannot be satisfied (416).
pub fn blob_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            if n == 0 || size == 0 {
                return None;
            }
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size.checked_sub(1)?),
        (a, b) => {
            let a: u64 = a.parse().ok()?;
            let b: u64 = b.parse().ok()?;
            (a, b.min(size.checked_sub(1)?))
        }
    };
    (start < size && start <= end).then_some((start, end))
}

/// A `Content-Range` header of an upload chunk: the inclusive `(start, end)` it announces, with
/// `end >= start` and a length that fits in a `u64`; `None` when it is not of that form.
pub fn chunk_range(value: &str) -> Option<(u64, u64)> {
    let spec = value
        .trim()
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let spec = spec.split('/').next().unwrap_or(spec);
    let (a, b) = spec.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    // The chunk's length, b - a + 1, must not wrap.
    (b >= a && b - a < u64::MAX).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header_forms() {
        let check = |v: &str, want: Option<(u64, u64)>| assert_eq!(blob_range(v, 100), want, "{v}");
        check("bytes=0-9", Some((0, 9)));
        check("bytes=90-", Some((90, 99)));
        check("bytes=-10", Some((90, 99)));
        check("bytes=-1000", Some((0, 99)));
        check("bytes=50-500", Some((50, 99)));
        check("bytes=100-", None);
        check("bytes=9-1", None);
        check("items=0-1", None);
        check("bytes=0-1,3-4", None);
        check("bytes=18446744073709551615-", None);
        assert_eq!(blob_range("bytes=0-", 0), None);
        assert_eq!(blob_range("bytes=-5", 0), None);
    }

    #[test]
    fn chunk_ranges_never_wrap() {
        assert_eq!(chunk_range("0-9"), Some((0, 9)));
        assert_eq!(chunk_range("bytes 10-19/100"), Some((10, 19)));
        assert_eq!(chunk_range("bytes=10-19"), Some((10, 19)));
        assert_eq!(chunk_range("0-18446744073709551615"), None);
        assert_eq!(chunk_range("1-18446744073709551615"), Some((1, u64::MAX)));
        assert_eq!(chunk_range("9-1"), None);
        assert_eq!(chunk_range("a-b"), None);
        assert_eq!(chunk_range("-"), None);
    }
}
