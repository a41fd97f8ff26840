//! docker's `--format` for listings and `inspect`: Go templates (`{{.ID}}`, `{{.State.Pid}}`,
//! `{{json .}}`, `{{index .Labels "k"}}`, `{{range}}`, `{{if}}`, `printf`, docker's `join`,
//! `lower`, `upper`, `split`, `title`, `truncate`, `pad`) through `gtmpl`; `table …` prints a
//! header named after the fields and aligns the columns as docker does (tabwriter, three
//! spaces of padding); `json` is one JSON object per line. Also docker's relative times.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context as _;
use gtmpl::{Context, Func, FuncError, Template};
use gtmpl_value::{Number, Value};

/// A listing's columns: the row field and docker's header for it.
pub type Headers = &'static [(&'static str, &'static str)];

/// Prints `rows` (docker's format context objects) with `format`: none means the listing's
/// `default` table.
pub fn print(
    rows: &[serde_json::Value],
    format: Option<&str>,
    default: &str,
    headers: Headers,
) -> anyhow::Result<()> {
    let out = render(rows, format.unwrap_or(default), headers)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    Ok(())
}

/// What [`print`] prints, as a string.
pub fn render(
    rows: &[serde_json::Value],
    format: &str,
    headers: Headers,
) -> anyhow::Result<String> {
    let format = expand_escapes(format);
    if format.trim() == "json" {
        let mut out = String::new();
        for r in rows {
            out.push_str(&serde_json::to_string(r)?);
            out.push('\n');
        }
        return Ok(out);
    }
    let (table, body) = match format.strip_prefix("table") {
        Some(rest) => (true, rest.trim_start().to_string()),
        None => (false, format.clone()),
    };
    let template = parse(&body)?;
    let mut lines = String::new();
    if table {
        lines.push_str(&header_line(&body, headers));
        lines.push('\n');
    }
    for r in rows {
        let line = template
            .render(&Context::from(to_value(r)))
            .map_err(|e| anyhow::anyhow!("template: {e}"))?;
        lines.push_str(&line);
        lines.push('\n');
    }
    if !table {
        return Ok(lines);
    }
    // docker's tabwriter: cells at least 10 wide padding included, three spaces of padding
    // (this crate's minimum leaves the padding out).
    let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(7).padding(3);
    tw.write_all(lines.as_bytes())?;
    let bytes = tw.into_inner().context("aligning the table")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `inspect --format`: the template over each object.
pub fn render_each(objects: &[serde_json::Value], format: &str) -> anyhow::Result<String> {
    let template = parse(&expand_escapes(format))?;
    let mut out = String::new();
    for o in objects {
        let line = template
            .render(&Context::from(to_value(o)))
            .map_err(|e| anyhow::anyhow!("template: {e}"))?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// docker takes `\t` and `\n` typed into a format as a tab and a newline.
fn expand_escapes(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

fn parse(body: &str) -> anyhow::Result<Template> {
    let mut t = Template::default();
    t.add_func("json", json as Func);
    t.add_func("join", join as Func);
    t.add_func("lower", lower as Func);
    t.add_func("upper", upper as Func);
    t.add_func("title", title as Func);
    t.add_func("split", split as Func);
    t.add_func("truncate", truncate as Func);
    t.add_func("pad", pad as Func);
    t.parse(body)
        .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
    Ok(t)
}

/// The header of a `table` format: each `{{.Field}}` (or `{{json .Field}}`…) named by
/// `headers`, else in capitals; the text around it kept (tabs and separators).
fn header_line(body: &str, headers: Headers) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let action = rest[start + 2..start + end].trim();
        let field = action
            .split_whitespace()
            .find(|w| w.starts_with('.'))
            .map(|w| w.trim_start_matches('.'))
            .unwrap_or("");
        let name = headers
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, h)| h.to_string())
            .unwrap_or_else(|| field.to_ascii_uppercase().replace('.', " "));
        out.push_str(&name);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out.trim_end_matches('\n').to_string()
}

fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::from(s.clone()),
        serde_json::Value::Array(a) => Value::from(a.iter().map(to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => number_json(n),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

fn number_json(n: &Number) -> serde_json::Value {
    if let Some(i) = n.as_i64() {
        serde_json::json!(i)
    } else if let Some(u) = n.as_u64() {
        serde_json::json!(u)
    } else {
        serde_json::json!(n.as_f64().unwrap_or(0.0))
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn arg(args: &[Value], n: usize, f: &str) -> Result<Value, FuncError> {
    args.get(n)
        .cloned()
        .ok_or_else(|| FuncError::Generic(format!("{f}: argument {} missing", n + 1)))
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let v = arg(args, 0, "json")?;
    Ok(Value::from(to_json(&v).to_string()))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let list = arg(args, 0, "join")?;
    let sep = text(&arg(args, 1, "join")?);
    let items: Vec<String> = match list {
        Value::Array(a) => a.iter().map(text).collect(),
        other => vec![text(&other)],
    };
    Ok(Value::from(items.join(&sep)))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(text(&arg(args, 0, "lower")?).to_lowercase()))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(text(&arg(args, 0, "upper")?).to_uppercase()))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(&arg(args, 0, "title")?);
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    Ok(Value::from(out))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(&arg(args, 0, "split")?);
    let sep = text(&arg(args, 1, "split")?);
    Ok(Value::from(
        s.split(sep.as_str())
            .map(|p| Value::from(p.to_string()))
            .collect::<Vec<_>>(),
    ))
}

fn count(v: &Value) -> usize {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
        other => text(other).parse().unwrap_or(0),
    }
}

fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(&arg(args, 0, "truncate")?);
    let n = count(&arg(args, 1, "truncate")?);
    Ok(Value::from(s.chars().take(n).collect::<String>()))
}

fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(&arg(args, 0, "pad")?);
    let before = count(&arg(args, 1, "pad")?);
    let after = count(&arg(args, 2, "pad")?);
    Ok(Value::from(format!(
        "{}{s}{}",
        " ".repeat(before),
        " ".repeat(after)
    )))
}

/// A JSON object's entries as docker lists labels and attributes: `k=v` joined by `sep`, in
/// key order.
pub fn pairs(map: &serde_json::Value, sep: &str) -> String {
    map.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(sep)
}

/// docker's relative time (`units.HumanDuration`): "Less than a second", "About a minute",
/// "3 hours", "2 weeks"…
pub fn human_duration(secs: u64) -> String {
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        172_800..=1_209_599 => format!("{} days", secs / 86_400),
        1_209_600..=5_183_999 => format!("{} weeks", secs / 604_800),
        5_184_000..=63_071_999 => format!("{} months", secs / 2_592_000),
        _ => format!("{} years", secs / 31_536_000),
    }
}

/// Seconds since the unix time `t` (0 for one in the future).
pub fn since_unix(t: i64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    u64::try_from(now - t).unwrap_or(0)
}

/// Go's `%.{prec}g` of a finite, non-negative value (trailing zeros dropped, as Go does).
fn go_g(v: f64, prec: usize) -> String {
    let prec = prec.max(1);
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let sci = format!("{:.*e}", prec - 1, v);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mant.to_string()), exp.abs())
    } else {
        let decimals = usize::try_from(prec as i32 - 1 - exp).unwrap_or(0);
        trim(format!("{v:.decimals$}"))
    }
}

/// go-units' `CustomSize`: `size` scaled down by `base` until below it, with its unit.
fn custom_size(size: f64, prec: usize, base: f64, units: &[&str]) -> String {
    let (mut size, mut i) = (size, 0);
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    format!("{}{}", go_g(size, prec), units[i])
}

/// go-units' `HumanSizeWithPrecision` (decimal: `2.05kB`).
pub(crate) fn human_size_prec(size: f64, prec: usize) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    custom_size(size, prec, 1000.0, UNITS)
}

/// go-units' `HumanSize` of a byte count as docker's prunes report it (`Total reclaimed space: 0B`).
pub(crate) fn human_size_f(size: f64) -> String {
    human_size_prec(size, 4)
}

/// go-units' `BytesSize` (binary: `1.5MiB`).
pub(crate) fn bytes_size(size: f64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    custom_size(size, 4, 1024.0, UNITS)
}

/// docker's short sizes in listings (`units.HumanSizeWithPrecision(n, 3)`): `1.23MB`, `512B`.
pub fn human_size(n: u64) -> String {
    human_size_prec(n as f64, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Headers = &[("ID", "CONTAINER ID"), ("Names", "NAMES")];

    #[test]
    fn fields_json_tables_and_functions() {
        let rows = vec![
            serde_json::json!({"ID": "abc", "Names": "web", "Labels": {"a": "1"}, "State": {"Pid": 42}}),
            serde_json::json!({"ID": "defghi", "Names": "db", "Labels": {}, "State": {"Pid": 7}}),
        ];
        assert_eq!(
            render(&rows, "{{.ID}}", H).expect("render"),
            "abc\ndefghi\n"
        );
        assert_eq!(
            render(
                &rows[..1],
                "{{.State.Pid}} {{index .Labels \"a\"}} {{upper .Names}}",
                H
            )
            .expect("render"),
            "42 1 WEB\n"
        );
        assert_eq!(
            render(&rows[..1], "{{json .State}}", H).expect("render"),
            "{\"Pid\":42}\n"
        );
        assert_eq!(
            render(&rows, "table {{.ID}}\\t{{.Names}}", H).expect("render"),
            "CONTAINER ID   NAMES\nabc            web\ndefghi         db\n"
        );
        let j = render(&rows[..1], "json", H).expect("render");
        assert!(j.starts_with("{\"ID\":\"abc\""), "{j}");
        assert!(render(&rows, "{{.ID", H).is_err());
    }

    #[track_caller]
    fn check_g(v: f64, prec: usize, want: &str) {
        assert_eq!(go_g(v, prec), want, "%.{prec}g of {v}");
    }

    #[test]
    fn numbers_print_as_gos_g_verb() {
        check_g(0.0, 3, "0");
        check_g(1.0, 3, "1");
        check_g(2.048, 3, "2.05");
        check_g(999.0, 3, "999");
        check_g(999.9, 3, "1e+03");
        check_g(12.5, 4, "12.5");
        check_g(1023.99, 4, "1024");
    }

    #[test]
    fn sizes_print_as_go_units() {
        assert_eq!(human_size_f(0.0), "0B");
        assert_eq!(human_size_prec(2048.0, 3), "2.05kB");
        assert_eq!(human_size_prec(1_500_000.0, 3), "1.5MB");
        assert_eq!(bytes_size(0.0), "0B");
        assert_eq!(bytes_size(1536.0 * 1024.0), "1.5MiB");
        assert_eq!(bytes_size(7.6 * 1024.0 * 1024.0 * 1024.0), "7.6GiB");
    }

    #[test]
    fn relative_times_and_sizes_as_docker_prints_them() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(3 * 604_800), "3 weeks");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(4_400_000), "4.4MB");
        assert_eq!(human_size(123_456_789), "123MB");
    }
}
