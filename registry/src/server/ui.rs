//! The web interface under `/ui/` (first part: log in and out, browse repositories, tags and
//! manifests). Server-rendered HTML, no JavaScript and no asset from elsewhere; the same users
//! and permissions as the registry's API.
//!
//! Sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` under TLS),
//! kept (as its sha256) in the metadata database for 12 hours, so every replica knows them. Every form carries a CSRF token: the session's, or before the
//! login a random one that must also be in a cookie of its own (double submit). Every value
//! written into a page goes through [`esc`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{random_hex, Principal};
use super::meta::MetaError;
use super::state::AppState;
use crate::digest::Digest;
use crate::server::auth::policy::Actions;

/// How long a session lives.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept per user at most (their oldest go first past it).
const SESSIONS_PER_USER: i64 = 100;
const COOKIE: &str = "reg_session";
const PRE_COOKIE: &str = "reg_csrf";
/// The largest image config read for its history.
const MAX_CONFIG: u64 = 1 << 20;

/// A logged-in browser.
#[derive(Clone)]
struct Session {
    user: String,
    csrf: String,
}

/// The sessions, in the metadata database (so every replica knows them), by the sha256 of
/// their cookie (a database leak hands out no live cookie). A session lives [`SESSION_TTL`]
/// and ends at once when its user's password changes or the user is removed.
pub struct Sessions;

impl Sessions {
    fn key(id: &str) -> String {
        Digest::of(crate::digest::Algorithm::Sha256, id.as_bytes()).to_string()
    }

    async fn get(st: &Arc<AppState>, id: &str) -> Option<Session> {
        let (meta, key) = (st.meta.clone(), Self::key(id));
        let ttl = SESSION_TTL.as_secs() as i64;
        off(move || meta.ui_session(&key, ttl))
            .await
            .flatten()
            .map(|(user, csrf)| Session { user, csrf })
    }

    /// A new session of `user`: its cookie value, or `None` when it could not be stored.
    async fn create(st: &Arc<AppState>, user: &str) -> Option<(String, Session)> {
        let (id, csrf) = (random_hex(32), random_hex(32));
        let (meta, key, u, c) = (
            st.meta.clone(),
            Self::key(&id),
            user.to_string(),
            csrf.clone(),
        );
        let ttl = SESSION_TTL.as_secs() as i64;
        let stored =
            off(move || meta.create_ui_session(&key, &u, &c, ttl, SESSIONS_PER_USER)).await;
        (stored == Some(true)).then(|| {
            (
                id,
                Session {
                    user: user.to_string(),
                    csrf,
                },
            )
        })
    }

    /// False when the database did not answer (the session still holds).
    async fn remove(st: &Arc<AppState>, id: &str) -> bool {
        let (meta, key) = (st.meta.clone(), Self::key(id));
        off(move || meta.remove_ui_session(&key)).await.is_some()
    }
}

/// The client's address as the API sees it (through trusted proxies' `X-Forwarded-For`): what
/// login slow-downs are keyed by, and what the audit log and webhooks record.
pub struct ClientAddr(String);

impl axum::extract::FromRequestParts<Arc<AppState>> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            st.auth.client(&parts.extensions, &parts.headers),
        ))
    }
}

/// Whether two tokens are equal, in time that does not depend on where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// HTML-escapes `s` for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` for a query string value.
fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn cookie_of(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(st: &AppState, name: &str, value: &str, max_age: u64) -> String {
    let secure = if st.cfg.tls().is_some() {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// Who is looking: `Ok(None)` = must log in first.
enum Viewer {
    /// Authentication is off: everything is visible.
    Open,
    User(String, Session),
}

async fn viewer(st: &Arc<AppState>, h: &HeaderMap) -> Result<Option<Viewer>, Response> {
    let on = st
        .auth
        .enabled()
        .await
        .map_err(IntoResponse::into_response)?;
    if !on {
        return Ok(Some(Viewer::Open));
    }
    let Some(id) = cookie_of(h, COOKIE) else {
        return Ok(None);
    };
    Ok(Sessions::get(st, &id)
        .await
        .map(|s| Viewer::User(s.user.clone(), s)))
}

/// The viewer, or a redirect to the login page.
async fn signed_in(st: &Arc<AppState>, h: &HeaderMap) -> Result<Viewer, Response> {
    viewer(st, h).await?.ok_or_else(|| redirect("/ui/login"))
}

/// `f` on the blocking pool; `None` when it failed (pages then show what they have).
async fn off<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(f)
        .await
        .ok()
        .and_then(Result::ok)
}

/// Whether `v` may delete from `repo` here. Without accounts there is no session to bind a
/// form to (a CSRF token): no deletes from the web interface.
async fn may_delete(st: &Arc<AppState>, v: &Viewer, repo: &str) -> bool {
    match v {
        Viewer::Open => false,
        Viewer::User(u, _) => st
            .auth
            .allowed(&Principal::User(u.clone()), repo)
            .await
            .is_ok_and(|a| a.contains(Actions::DELETE)),
    }
}

async fn may_pull(st: &Arc<AppState>, v: &Viewer, repo: &str) -> bool {
    match v {
        Viewer::Open => true,
        Viewer::User(u, _) => st
            .auth
            .allowed(&Principal::User(u.clone()), repo)
            .await
            .map(|a| a.contains(Actions::PULL))
            .unwrap_or(false),
    }
}

fn page(status: StatusCode, title: &str, v: Option<&Viewer>, body: &str) -> Response {
    let user = match v {
        Some(Viewer::User(u, s)) => format!(
            "<a href=\"/ui/account\">Account</a> · <a href=\"/ui/tokens\">Access tokens</a> · <a href=\"/ui/admin/users\">Users</a> · <a href=\"/ui/admin/orgs\">Organisations</a> · <a href=\"/ui/admin/audit\">Audit log</a> · <a href=\"/ui/admin/storage\">Storage</a> · <a href=\"/ui/admin/retention\">Retention</a> · <a href=\"/ui/admin/node\">Node</a> · \
             <span>Signed in as <strong>{}</strong></span> \
             <form method=\"post\" action=\"/ui/logout\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Log out</button></form>",
            esc(u),
            esc(&s.csrf)
        ),
        _ => String::new(),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · reg</title><style>{CSS}</style></head><body>\
         <header><a href=\"/ui/\" class=\"brand\">reg</a><nav aria-label=\"account\">{user}</nav></header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        "content-security-policy",
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert("x-frame-options", header::HeaderValue::from_static("DENY"));
    h.insert(
        "cache-control",
        header::HeaderValue::from_static("no-store"),
    );
    r
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#111;background:#fff}\
header{display:flex;justify-content:space-between;align-items:center;padding:.6rem 1rem;background:#0b3d62;color:#fff}\
header a,header strong{color:#fff}.brand{font-weight:700;font-size:1.2rem;text-decoration:none}\
main{padding:1rem;max-width:70rem}h1{font-size:1.4rem;word-break:break-all}table{border-collapse:collapse;width:100%;margin-bottom:1.2rem}\
caption{text-align:left;font-weight:600;padding:.3rem 0}\
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ccc;vertical-align:top}\
code{font-size:.9em;word-break:break-all}.inline{display:inline}\
label{display:block;margin:.5rem 0 .2rem}input{padding:.35rem;font-size:1rem}\
button{padding:.35rem .8rem;font-size:1rem;margin-top:.5rem}.error{color:#a00000;font-weight:600}\
pre{background:#f4f4f4;padding:.5rem;overflow:auto;max-height:40rem;white-space:pre-wrap}\
a{color:#0b3d62}a:focus,button:focus,input:focus,pre:focus{outline:3px solid #f5a623}";

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = header::HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `GET /`: browsers go to the web interface.
pub async fn root() -> Response {
    redirect("/ui/")
}

fn login_form(st: &AppState, error: &str, status: StatusCode) -> Response {
    let token = random_hex(32);
    let err = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", esc(error))
    };
    let body = format!(
        "{err}<form method=\"post\" action=\"/ui/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <label for=\"username\">User name</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <div><button type=\"submit\">Log in</button></div></form>"
    );
    let mut r = page(status, "Log in", None, &body);
    if let Ok(v) = header::HeaderValue::from_str(&set_cookie(st, PRE_COOKIE, &token, 3600)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `GET /ui/login`.
pub async fn login_page(State(st): State<Arc<AppState>>) -> Response {
    login_form(&st, "", StatusCode::OK)
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    csrf: String,
}

/// `POST /ui/login`.
pub async fn login(
    State(st): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let pre = cookie_of(&headers, PRE_COOKIE).unwrap_or_default();
    if f.csrf.is_empty() || !same_token(&pre, &f.csrf) {
        return forbidden("The form expired or did not come from this site: load it again.");
    }
    match st
        .auth
        .check_password(&f.username, &f.password, &client)
        .await
    {
        Ok(Some(Principal::User(user))) => {
            let Some((id, _)) = Sessions::create(&st, &user).await else {
                return login_form(
                    &st,
                    "The session could not be stored (the registry's database did not answer): try again.",
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            };
            st.auth.audit(&user, "login.ui", "", "", &client).await;
            let mut r = redirect("/ui/");
            for c in [
                set_cookie(&st, COOKIE, &id, SESSION_TTL.as_secs()),
                set_cookie(&st, PRE_COOKIE, "", 0),
            ] {
                if let Ok(v) = header::HeaderValue::from_str(&c) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        Ok(_) => login_form(
            &st,
            "Wrong user name or password (access tokens are for the API, not this page).",
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => e.into_response(),
    }
}

/// A 503 page: the database did not answer, nothing was changed.
fn unavailable(why: &str) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again",
        None,
        &format!("<p class=\"error\" role=\"alert\">{}</p>", esc(why)),
    )
}

fn forbidden(why: &str) -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Forbidden",
        None,
        &format!("<p class=\"error\" role=\"alert\">{}</p>", esc(why)),
    )
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /ui/logout`.
pub async fn logout(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Some(id) = cookie_of(&headers, COOKIE) else {
        return redirect("/ui/login");
    };
    let Some(s) = Sessions::get(&st, &id).await else {
        return redirect("/ui/login");
    };
    if let Some(r) = csrf_refusal(&f.csrf, &s) {
        return r;
    }
    if !Sessions::remove(&st, &id).await {
        return unavailable(
            "You are not logged out: the registry's database did not answer. Try again.",
        );
    }
    let mut r = redirect("/ui/login");
    if let Ok(v) = header::HeaderValue::from_str(&set_cookie(&st, COOKIE, "", 0)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub struct ReposQuery {
    q: Option<String>,
}

/// `GET /ui/`: the repositories the viewer may pull from, with a search box.
pub async fn repos(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ReposQuery>,
) -> Response {
    let v = match signed_in(&st, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let search = query.q.unwrap_or_default();
    let mut rows = String::new();
    let mut last = String::new();
    let mut shown = 0;
    'pages: loop {
        let (meta, after) = (st.meta.clone(), last.clone());
        let Ok(Ok(batch)) = tokio::task::spawn_blocking(move || meta.ui_repos(&after, 500)).await
        else {
            break;
        };
        let done = batch.len() < 500;
        for repo in batch {
            let r = repo.name;
            last = r.clone();
            if (!search.is_empty() && !r.contains(search.as_str())) || !may_pull(&st, &v, &r).await
            {
                continue;
            }
            rows.push_str(&format!(
                "<tr><td><a href=\"/ui/repo?name={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                q(&r),
                esc(&r),
                esc(super::auth::policy::namespace(&r)),
                if repo.public { "public" } else { "private" },
                esc(&super::quota::human(repo.size)),
                esc(&repo.pushed.map(when).unwrap_or_else(|| "-".into()))
            ));
            shown += 1;
            if shown >= 1000 {
                break 'pages;
            }
        }
        if done {
            break;
        }
    }
    let body = format!(
        "<form method=\"get\" action=\"/ui/\" role=\"search\"><label for=\"q\">Search repositories</label>\
         <input id=\"q\" name=\"q\" value=\"{}\"> <button type=\"submit\">Search</button></form>\
         <table><caption>{shown} repositories</caption><thead><tr><th scope=\"col\">Repository</th>\
         <th scope=\"col\">Namespace</th><th scope=\"col\">Visibility</th><th scope=\"col\">Stored</th><th scope=\"col\">Last push</th></tr></thead><tbody>{rows}</tbody></table>",
        esc(&search)
    );
    page(StatusCode::OK, "Repositories", Some(&v), &body)
}

#[derive(Deserialize)]
pub struct RepoQuery {
    name: String,
}

/// The registry's host as the browser reached it, for `docker pull` lines.
fn host(h: &HeaderMap) -> String {
    h.get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string()
}

/// The sum of a manifest's layer sizes, and whether it is an index.
/// An index's platforms (`linux/amd64, linux/arm64/v8`), empty for an image.
fn platforms_of(content: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(content) else {
        return String::new();
    };
    let Some(m) = v["manifests"].as_array() else {
        return String::new();
    };
    m.iter()
        .filter_map(|d| {
            let p = &d["platform"];
            let (os, arch) = (p["os"].as_str()?, p["architecture"].as_str()?);
            Some(match p["variant"].as_str() {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn size_of(content: &[u8]) -> (u64, bool) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(content) else {
        return (0, false);
    };
    if let Some(m) = v["manifests"].as_array() {
        return (m.iter().filter_map(|d| d["size"].as_u64()).sum(), true);
    }
    let layers = v["layers"].as_array().map_or(0, |l| {
        l.iter().filter_map(|d| d["size"].as_u64()).sum::<u64>()
    });
    (layers + v["config"]["size"].as_u64().unwrap_or(0), false)
}

/// `GET /ui/repo?name=…`: a repository's tags.
pub async fn repo(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<RepoQuery>,
) -> Response {
    let v = match signed_in(&st, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name = query.name;
    if !may_pull(&st, &v, &name).await {
        return not_found(&v);
    }
    let (meta, n) = (st.meta.clone(), name.clone());
    let tags = match tokio::task::spawn_blocking(move || meta.ui_tags(&n, 1000)).await {
        Ok(Ok(t)) => t,
        _ => Vec::new(),
    };
    let may_delete = may_delete(&st, &v, &name).await;
    let rules = st.retention.rules().await;
    let csrf = match &v {
        Viewer::User(_, s) => s.csrf.clone(),
        Viewer::Open => String::new(),
    };
    let mut rows = String::new();
    for t in &tags {
        let (size, index) = size_of(&t.content);
        let action = if super::gc::is_immutable(&rules, &name, &t.tag) {
            "immutable".to_string()
        } else if may_delete {
            format!(
                "<form method=\"post\" action=\"/ui/tag/delete\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"name\" value=\"{}\">\
                 <input type=\"hidden\" name=\"tag\" value=\"{}\">\
                 <button type=\"submit\" aria-label=\"Delete tag {}\">Delete</button></form>",
                esc(&csrf),
                esc(&name),
                esc(&t.tag),
                esc(&t.tag)
            )
        } else {
            String::new()
        };
        rows.push_str(&format!(
            "<tr><td>{tag}</td><td><a href=\"/ui/manifest?name={qn}&amp;digest={qd}\"><code>{d}</code></a></td>\
             <td>{size}</td><td>{kind}</td><td>{when}</td><td>{by}</td><td>{pulled}</td><td>{action}</td></tr>",
            tag = esc(&t.tag),
            qn = q(&name),
            qd = q(&t.digest),
            d = esc(&t.digest),
            size = esc(&super::quota::human(size)),
            kind = if index {
                let platforms = platforms_of(&t.content);
                if platforms.is_empty() {
                    "index".to_string()
                } else {
                    format!("index: {}", esc(&platforms))
                }
            } else {
                "image".to_string()
            },
            when = esc(&when(t.updated_at)),
            by = if t.pushed_by.is_empty() {
                "-".to_string()
            } else {
                esc(&t.pushed_by)
            },
            pulled = if t.pulled_at == 0 {
                "never".to_string()
            } else {
                esc(&when(t.pulled_at))
            },
        ));
    }
    let visibility = match &v {
        Viewer::User(u, s) if sets_visibility(&st, u, &name).await => {
            let (meta, n) = (st.meta.clone(), name.clone());
            let public = off(move || meta.facts(None, &n))
                .await
                .is_some_and(|f| f.public);
            format!(
                "<form method=\"post\" action=\"/ui/visibility\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <input type=\"hidden\" name=\"name\" value=\"{}\"><input type=\"hidden\" name=\"public\" value=\"{}\">\
                 <p>Visibility: <strong>{}</strong> <button type=\"submit\" id=\"visibility\">Make it {}</button></p></form>",
                esc(&s.csrf),
                esc(&name),
                !public,
                if public { "public" } else { "private" },
                if public { "private" } else { "public" },
            )
        }
        _ => String::new(),
    };
    let body = format!(
        "{visibility}<p>Pull: <code>docker pull {host}/{name}:TAG</code></p>\
         <table><caption>{n} tags</caption><thead><tr><th scope=\"col\">Tag</th><th scope=\"col\">Digest</th>\
         <th scope=\"col\">Size</th><th scope=\"col\">Kind</th><th scope=\"col\">Pushed</th><th scope=\"col\">Pushed by</th>\
         <th scope=\"col\">Last pulled</th><th scope=\"col\">Action</th></tr></thead><tbody>{rows}</tbody></table>",
        host = esc(&host(&headers)),
        name = esc(&name),
        n = tags.len(),
    );
    page(StatusCode::OK, &name, Some(&v), &body)
}

fn when(unix: i64) -> String {
    use std::fmt::Write;
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    // humantime cannot write years past 9999 (its Display fails): plain seconds then.
    let mut out = String::new();
    match write!(out, "{}", humantime::format_rfc3339_seconds(t)) {
        Ok(()) => out,
        Err(_) => format!("{unix} s after 1970"),
    }
}

fn not_found(v: &Viewer) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        Some(v),
        "<p>No such repository or manifest, or you may not see it.</p>",
    )
}

#[derive(Deserialize)]
pub struct ManifestQuery {
    name: String,
    digest: String,
}

/// `GET /ui/manifest?name=…&digest=…`: layers, the config's history, an index's platforms.
pub async fn manifest(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ManifestQuery>,
) -> Response {
    let v = match signed_in(&st, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (name, digest) = (query.name, query.digest);
    if Digest::parse(&digest).is_err() || !may_pull(&st, &v, &name).await {
        return not_found(&v);
    }
    let (meta, n, d) = (st.meta.clone(), name.clone(), digest.clone());
    let Ok(Ok(Some(row))) =
        tokio::task::spawn_blocking(move || meta.get_manifest(&n, &d, true)).await
    else {
        return not_found(&v);
    };
    let m: serde_json::Value = serde_json::from_slice(&row.content).unwrap_or_default();
    let mut body = format!(
        "<p>Pull: <code>docker pull {}/{}@{}</code></p><p>Media type: <code>{}</code></p>",
        esc(&host(&headers)),
        esc(&name),
        esc(&digest),
        esc(&row.media_type)
    );
    if let Some(children) = m["manifests"].as_array() {
        body.push_str("<table><caption>Platforms</caption><thead><tr><th scope=\"col\">Platform</th><th scope=\"col\">Digest</th><th scope=\"col\">Size</th></tr></thead><tbody>");
        for c in children {
            let p = &c["platform"];
            let platform = format!(
                "{}/{}{}",
                p["os"].as_str().unwrap_or("?"),
                p["architecture"].as_str().unwrap_or("?"),
                p["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            );
            let cd = c["digest"].as_str().unwrap_or("");
            body.push_str(&format!(
                "<tr><td>{}</td><td><a href=\"/ui/manifest?name={}&amp;digest={}\"><code>{}</code></a></td><td>{}</td></tr>",
                esc(&platform),
                q(&name),
                q(cd),
                esc(cd),
                esc(&super::quota::human(c["size"].as_u64().unwrap_or(0)))
            ));
        }
        body.push_str("</tbody></table>");
    }
    if let Some(layers) = m["layers"].as_array() {
        body.push_str("<table><caption>Layers</caption><thead><tr><th scope=\"col\">#</th><th scope=\"col\">Digest</th><th scope=\"col\">Size</th><th scope=\"col\">Media type</th></tr></thead><tbody>");
        for (i, l) in layers.iter().enumerate() {
            body.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
                i + 1,
                esc(l["digest"].as_str().unwrap_or("")),
                esc(&super::quota::human(l["size"].as_u64().unwrap_or(0))),
                esc(l["mediaType"].as_str().unwrap_or(""))
            ));
        }
        body.push_str("</tbody></table>");
    }
    if let Some(config) = m["config"]["digest"]
        .as_str()
        .and_then(|c| Digest::parse(c).ok())
    {
        if let Some(history) = config_history(&st, &config).await {
            body.push_str("<table><caption>History (image config)</caption><thead><tr><th scope=\"col\">Created</th><th scope=\"col\">Created by</th></tr></thead><tbody>");
            for h in history {
                body.push_str(&format!(
                    "<tr><td>{}</td><td><code>{}</code></td></tr>",
                    esc(&h.0),
                    esc(&h.1)
                ));
            }
            body.push_str("</tbody></table>");
        }
    }
    if let Ok(subject) = Digest::parse(&digest) {
        let (meta, n) = (st.meta.clone(), name.clone());
        let referrers = off(move || meta.referrers(&n, &subject, None))
            .await
            .unwrap_or_default();
        if !referrers.is_empty() {
            body.push_str("<table><caption>Referrers (signatures, SBOMs, other artifacts)</caption><thead><tr><th scope=\"col\">Artifact type</th><th scope=\"col\">Digest</th><th scope=\"col\">Size</th></tr></thead><tbody>");
            for r in referrers {
                body.push_str(&format!(
                    "<tr><td><code>{}</code></td><td><a href=\"/ui/manifest?name={}&amp;digest={}\"><code>{}</code></a></td><td>{}</td></tr>",
                    esc(r.artifact_type.as_deref().unwrap_or(&r.media_type)),
                    q(&name),
                    q(&r.digest),
                    esc(&r.digest),
                    esc(&super::quota::human(u64::try_from(r.size).unwrap_or(0)))
                ));
            }
            body.push_str("</tbody></table>");
        }
    }
    if let Viewer::User(_, session) = &v {
        if may_delete(&st, &v, &name).await {
            body.push_str(&format!(
                "<form method=\"post\" action=\"/ui/manifest/delete\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"name\" value=\"{}\">\
                 <input type=\"hidden\" name=\"digest\" value=\"{}\">\
                 <button type=\"submit\">Delete this manifest and its tags</button></form>",
                esc(&session.csrf),
                esc(&name),
                esc(&digest)
            ));
        }
    }
    page(StatusCode::OK, &format!("{name}@{digest}"), Some(&v), &body)
}

#[derive(Deserialize)]
pub struct DeleteTagForm {
    csrf: String,
    name: String,
    tag: String,
}

/// `POST /ui/tag/delete`: deletes a tag, where the viewer may delete and the tag is not
/// immutable.
pub async fn delete_tag(
    State(st): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<DeleteTagForm>,
) -> Response {
    let actor = match deleter(&st, &headers, &f.csrf, &f.name).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    if super::gc::is_immutable(&st.retention.rules().await, &f.name, &f.tag) {
        return forbidden("This tag is immutable (registry.retention): it cannot be deleted.");
    }
    let (meta, n, t) = (st.meta.clone(), f.name.clone(), f.tag.clone());
    match off(move || meta.delete_tag(&n, &t)).await {
        Some(true) => deleted(&st, (&headers, &client), &actor, &f.name, &f.tag).await,
        Some(false) => {}
        None => {
            return unavailable(
                "The tag could not be deleted (the registry's database did not answer); try again.",
            )
        }
    }
    redirect(&format!("/ui/repo?name={}", q(&f.name)))
}

/// The user a delete form of `repo` comes from, once its CSRF token and the user's right to
/// delete there are checked; else the 403 to answer.
async fn deleter(
    st: &Arc<AppState>,
    h: &HeaderMap,
    csrf: &str,
    repo: &str,
) -> Result<String, Response> {
    let v = signed_in(st, h).await?;
    match &v {
        Viewer::User(u, s) => {
            if let Some(r) = csrf_refusal(csrf, s) {
                return Err(r);
            }
            if !may_delete(st, &v, repo).await {
                return Err(forbidden("You may not delete from this repository."));
            }
            Ok(u.clone())
        }
        Viewer::Open => Err(forbidden(
            "Deleting from the web interface needs an account (authentication is off): use the API.",
        )),
    }
}

/// What a delete from the web interface leaves behind, as the API's would: the audit entry
/// and the webhooks' `delete` event.
async fn deleted(
    st: &Arc<AppState>,
    (h, client): (&HeaderMap, &str),
    user: &str,
    repo: &str,
    reference: &str,
) {
    let sep = if reference.contains(':') { "@" } else { ":" };
    st.auth
        .audit(
            user,
            "delete.manifest",
            &format!("{repo}{sep}{reference}"),
            "web interface",
            client,
        )
        .await;
    super::api::events::deleted_in_ui(st, repo, reference, h, client, user);
}

#[derive(Deserialize)]
pub struct DeleteManifestForm {
    csrf: String,
    name: String,
    digest: String,
}

/// `POST /ui/manifest/delete`: deletes a manifest by digest, and with it every tag naming it,
/// where the viewer may delete and none of those tags is immutable.
pub async fn delete_manifest(
    State(st): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<DeleteManifestForm>,
) -> Response {
    let actor = match deleter(&st, &headers, &f.csrf, &f.name).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Ok(digest) = Digest::parse(&f.digest) else {
        return forbidden("Not a digest.");
    };
    let rules = st.retention.rules().await;
    let (meta, n) = (st.meta.clone(), f.name.clone());
    let outcome =
        off(move || meta.delete_manifest(&n, &digest, |t| super::gc::is_immutable(&rules, &n, t)))
            .await;
    match outcome {
        Some(super::meta::Deletion::Deleted) => {
            deleted(&st, (&headers, &client), &actor, &f.name, &f.digest).await
        }
        Some(super::meta::Deletion::NotFound) => {}
        Some(super::meta::Deletion::Protected(t)) => {
            return forbidden(&format!(
                "Tag {t} names this manifest and is immutable (registry.retention): it cannot be deleted."
            ))
        }
        None => return unavailable("The manifest could not be deleted (the registry's database did not answer); try again."),
    }
    redirect(&format!("/ui/repo?name={}", q(&f.name)))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    limit: Option<u32>,
}

/// `GET /ui/admin/audit`: the audit log, newest last, filtered by actor and action
/// (administrators: every entry; organisation admins: the entries about their organisations).
pub async fn admin_audit(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Response {
    let (u, s, m) = match manager_page(&st, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let limit = query.limit.unwrap_or(500).clamp(1, 10_000);
    let meta = st.meta.clone();
    let log = off(move || meta.audit_log(limit)).await.unwrap_or_default();
    let (actor, action) = (
        query.actor.unwrap_or_default(),
        query.action.unwrap_or_default(),
    );
    let rows: String = log
        .iter()
        .filter(|e| m.org(audit_namespace(&e.target)))
        .filter(|e| actor.is_empty() || e.actor == actor)
        .filter(|e| action.is_empty() || e.action.starts_with(action.as_str()))
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&when(e.at)),
                esc(&e.actor),
                esc(&e.action),
                esc(&e.target),
                esc(&e.client),
                esc(&e.detail)
            )
        })
        .collect();
    let body = format!(
        "<form method=\"get\" action=\"/ui/admin/audit\"><label for=\"actor\">Who</label><input id=\"actor\" name=\"actor\" value=\"{}\">\
         <label for=\"action\">Action (prefix: push, delete, login, token)</label><input id=\"action\" name=\"action\" value=\"{}\">\
         <div><button type=\"submit\">Filter</button></div></form>\
         <table><caption>Audit log (the newest {limit} events, filtered)</caption><thead><tr><th scope=\"col\">When</th>\
         <th scope=\"col\">Who</th><th scope=\"col\">Action</th><th scope=\"col\">Target</th><th scope=\"col\">From</th>\
         <th scope=\"col\">Detail</th></tr></thead><tbody>{rows}</tbody></table>",
        esc(&actor),
        esc(&action)
    );
    page(
        StatusCode::OK,
        "Audit log",
        Some(&Viewer::User(u, s)),
        &body,
    )
}

/// `GET /ui/admin/node`: the local node's containers and images (administrators only:
/// containers' names, images and logs are the host's business).
pub async fn admin_node(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (u, s) = match admin_page(&st, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let v = Viewer::User(u, s);
    let Some(node) = st.node.clone() else {
        return page(
            StatusCode::OK,
            "Node",
            Some(&v),
            "<p>No node runs beside this registry: <code>reg serve</code> started as root runs one \
             (<code>reg registry serve</code> and a registry started by another user do not).</p>",
        );
    };
    let (containers, images) = tokio::join!(node.containers(), node.images());
    let containers = match containers {
        Ok(list) => {
            let rows: String = list
                .iter()
                .map(|c| {
                    let short = c.id.get(..12).unwrap_or(&c.id);
                    format!(
                        "<tr><td><a href=\"/ui/admin/node/logs?id={}\">{}</a></td><td><code>{}</code></td><td>{}</td>\
                         <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        q(&c.id),
                        esc(&c.name),
                        esc(short),
                        esc(&c.image),
                        esc(&c.state),
                        esc(&c.status),
                        esc(&c.ports.join(", ")),
                        esc(&when(c.created))
                    )
                })
                .collect();
            format!(
                "<table><caption>Containers ({n})</caption><thead><tr><th scope=\"col\">Name (its log)</th>\
                 <th scope=\"col\">ID</th><th scope=\"col\">Image</th><th scope=\"col\">State</th>\
                 <th scope=\"col\">Status and health</th><th scope=\"col\">Ports</th><th scope=\"col\">Created</th>\
                 </tr></thead><tbody>{rows}</tbody></table>",
                n = list.len()
            )
        }
        Err(e) => format!(
            "<p class=\"error\" role=\"alert\">Containers: {}</p>",
            esc(&e.to_string())
        ),
    };
    let images = match images {
        Ok(list) => {
            let rows: String = list
                .iter()
                .map(|i| {
                    let id = i.id.trim_start_matches("sha256:");
                    format!(
                        "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                        if i.tags.is_empty() {
                            "&lt;none&gt;".to_string()
                        } else {
                            esc(&i.tags.join(", "))
                        },
                        esc(id.get(..12).unwrap_or(id)),
                        esc(&super::quota::human(i.size)),
                        esc(&when(i.created))
                    )
                })
                .collect();
            format!(
                "<table><caption>Images ({n})</caption><thead><tr><th scope=\"col\">Tags</th><th scope=\"col\">ID</th>\
                 <th scope=\"col\">Size</th><th scope=\"col\">Created</th></tr></thead><tbody>{rows}</tbody></table>",
                n = list.len()
            )
        }
        Err(e) => format!(
            "<p class=\"error\" role=\"alert\">Images: {}</p>",
            esc(&e.to_string())
        ),
    };
    page(
        StatusCode::OK,
        "Node",
        Some(&v),
        &format!("<p>The node running beside this registry, read-only.</p>{containers}{images}"),
    )
}

#[derive(Deserialize)]
pub struct NodeLogsQuery {
    id: String,
}

/// How many lines of a container's log its page shows.
const LOG_TAIL_LINES: usize = 200;

/// `GET /ui/admin/node/logs?id=`: a container's last log lines.
pub async fn admin_node_logs(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<NodeLogsQuery>,
) -> Response {
    let (u, s) = match admin_page(&st, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let v = Viewer::User(u, s);
    let Some(node) = st.node.clone() else {
        return redirect("/ui/admin/node");
    };
    let (status, body) = match node.logs(&query.id, LOG_TAIL_LINES).await {
        Ok(log) => (StatusCode::OK, format!(
            "<p>The last {LOG_TAIL_LINES} lines of <code>{}</code>'s log (stdout and stderr). \
             <a href=\"/ui/admin/node\">Back to the node</a></p><pre tabindex=\"0\" aria-label=\"log\">{}</pre>",
            esc(&query.id),
            esc(&log)
        )),
        Err(e) => (
            match e {
                super::nodes::NodeViewError::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_GATEWAY,
            },
            format!("<p class=\"error\" role=\"alert\">{}</p>", esc(&e.to_string())),
        ),
    };
    page(status, "Container log", Some(&v), &body)
}

/// The namespace an audit entry's target is in (`team/app:v1`, `team/app@sha256:…`,
/// `team/carol`, `team`, `team/*` → `team`): what an organisation admin's view keeps.
fn audit_namespace(target: &str) -> &str {
    target.split(['/', ':', '@']).next().unwrap_or(target)
}

/// The image config's `history` (created, created_by), when the config is here and small.
async fn config_history(st: &Arc<AppState>, config: &Digest) -> Option<Vec<(String, String)>> {
    let (meta, d) = (st.meta.clone(), config.clone());
    let size = tokio::task::spawn_blocking(move || meta.blob_size(&d))
        .await
        .ok()?
        .ok()??;
    if size > MAX_CONFIG {
        return None;
    }
    let chunks = st.store.read(config, 0, size).await.ok()??;
    let mut chunks = std::pin::pin!(chunks);
    let mut bytes = Vec::new();
    while let Some(c) = futures::StreamExt::next(&mut chunks).await {
        bytes.extend_from_slice(&c.ok()?);
        if bytes.len() as u64 > MAX_CONFIG {
            return None;
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(
        v["history"]
            .as_array()?
            .iter()
            .map(|h| {
                (
                    h["created"].as_str().unwrap_or("").to_string(),
                    h["created_by"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}

/// The logged-in user and session, or the answer to give instead (a login redirect, or a
/// page saying there are no accounts while authentication is off).
async fn user(st: &Arc<AppState>, h: &HeaderMap) -> Result<(String, Session), Response> {
    match viewer(st, h).await? {
        Some(Viewer::User(u, s)) => Ok((u, s)),
        Some(Viewer::Open) => Err(page(
            StatusCode::NOT_FOUND,
            "No accounts",
            Some(&Viewer::Open),
            "<p>Authentication is off: this registry has no users yet \
             (<code>reg admin user add NAME --admin --password-stdin</code>).</p>",
        )),
        None => Err(redirect("/ui/login")),
    }
}

async fn is_admin(st: &Arc<AppState>, user: &str) -> bool {
    let (meta, u) = (st.meta.clone(), user.to_string());
    off(move || meta.user_admin(&u)).await.flatten() == Some(true)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// `GET /ui/tokens`: the user's access tokens, and a form for a new one.
pub async fn tokens(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (u, s) = match user(&st, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    tokens_page(&st, &u, &s, "").await
}

async fn tokens_page(st: &Arc<AppState>, u: &str, s: &Session, notice: &str) -> Response {
    let meta = st.meta.clone();
    let all = off(move || meta.tokens()).await.unwrap_or_default();
    let mut rows = String::new();
    for t in all.iter().filter(|t| t.user == u) {
        let scopes: Vec<String> = t.scopes.iter().map(ToString::to_string).collect();
        let state = if t.revoked {
            "revoked".to_string()
        } else if t.expires_at.is_some_and(|e| e <= now_secs()) {
            "expired".to_string()
        } else {
            format!(
                "<form method=\"post\" action=\"/ui/tokens/revoke\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <input type=\"hidden\" name=\"id\" value=\"{}\">\
                 <button type=\"submit\">Revoke</button></form>",
                esc(&s.csrf),
                esc(&t.id)
            )
        };
        rows.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td></tr>",
            esc(&t.id),
            esc(&if scopes.is_empty() {
                "all of the user's rights".to_string()
            } else {
                scopes.join(" ")
            }),
            esc(&when(t.created_at)),
            esc(&t.expires_at.map(when).unwrap_or_else(|| "never".into())),
        ));
    }
    let body = format!(
        "{notice}<table><caption>Your access tokens</caption><thead><tr><th scope=\"col\">Id</th>\
         <th scope=\"col\">Scopes</th><th scope=\"col\">Created</th><th scope=\"col\">Expires</th>\
         <th scope=\"col\">State</th></tr></thead><tbody>{rows}</tbody></table>\
         <h2>New token</h2><form method=\"post\" action=\"/ui/tokens\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"scopes\">Scopes (space-separated, e.g. <code>repository:team/app:pull,push</code>; empty: all your rights)</label>\
         <input id=\"scopes\" name=\"scopes\" size=\"60\">\
         <label for=\"expires\">Expires after (e.g. 30d, 12h; empty: never)</label>\
         <input id=\"expires\" name=\"expires\" value=\"30d\">\
         <div><button type=\"submit\">Create token</button></div></form>",
        csrf = esc(&s.csrf),
    );
    page(
        StatusCode::OK,
        "Access tokens",
        Some(&Viewer::User(u.to_string(), s.clone())),
        &body,
    )
}

#[derive(Deserialize)]
pub struct NewTokenForm {
    csrf: String,
    scopes: String,
    expires: String,
}

/// `POST /ui/tokens`: creates a token; its secret is shown this once.
pub async fn create_token(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<NewTokenForm>,
) -> Response {
    let (u, s) = match user_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut scopes = Vec::new();
    for sc in f.scopes.split_whitespace() {
        match super::auth::policy::Scope::parse(sc) {
            Some(x @ super::auth::policy::Scope::Repository { .. }) => scopes.push(x),
            _ => {
                let msg = format!(
                    "<p class=\"error\" role=\"alert\">Scope {} is not repository:NAME:pull[,push][,delete].</p>",
                    esc(sc)
                );
                return tokens_page(&st, &u, &s, &msg).await;
            }
        }
    }
    let expires_at = match f.expires.trim() {
        "" => None,
        e => match reg_config::parse_duration(e) {
            Ok(d) => {
                Some(now_secs().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)))
            }
            Err(why) => {
                let msg = format!(
                    "<p class=\"error\" role=\"alert\">Expiry: {}</p>",
                    esc(&why)
                );
                return tokens_page(&st, &u, &s, &msg).await;
            }
        },
    };
    let (id, secret, hash) = super::auth::new_access_token();
    let row = super::auth::store::TokenRow {
        id: id.clone(),
        user: u.clone(),
        secret_sha256: hash,
        scopes,
        expires_at,
        revoked: false,
        created_at: now_secs(),
    };
    let meta = st.meta.clone();
    if !matches!(
        tokio::task::spawn_blocking(move || meta.create_token(&row)).await,
        Ok(Ok(()))
    ) {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            None,
            "<p class=\"error\">The token could not be stored; the registry log has the cause.</p>",
        );
    }
    st.auth
        .audit(&u, "token.create", &id, "web interface", "")
        .await;
    let notice = format!(
        "<div role=\"status\"><p>New token <code>{}</code>. Copy its secret now: it is not shown again.</p>\
         <p><label for=\"secret\">Secret (use it as the password: <code>docker login -u {}</code>)</label>\
         <input id=\"secret\" readonly size=\"70\" value=\"{}\"></p></div>",
        esc(&id),
        esc(&u),
        esc(&secret)
    );
    tokens_page(&st, &u, &s, &notice).await
}

#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: String,
    id: String,
}

/// `POST /ui/tokens/revoke`: revokes one of the user's tokens.
pub async fn revoke_token(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let (u, s) = match user_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (meta, id) = (st.meta.clone(), f.id.clone());
    let mine = off(move || meta.token(&id))
        .await
        .flatten()
        .is_some_and(|t| t.user == u);
    if !mine {
        return forbidden("That is not one of your tokens.");
    }
    let (meta, id) = (st.meta.clone(), f.id.clone());
    if off(move || meta.revoke_token(&id)).await.is_none() {
        let notice = alert("The token could not be revoked (the registry's database did not answer): it still works. Try again.");
        return tokens_page(&st, &u, &s, &notice).await;
    }
    st.auth
        .audit(&u, "token.revoke", &f.id, "web interface", "")
        .await;
    let notice = format!(
        "<p role=\"status\">Token <code>{}</code> revoked.</p>",
        esc(&f.id)
    );
    tokens_page(&st, &u, &s, &notice).await
}

#[derive(Deserialize)]
pub struct VisibilityForm {
    csrf: String,
    name: String,
    public: String,
}

/// `POST /ui/visibility`: makes a repository public or private ([`sets_visibility`]).
pub async fn set_visibility(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<VisibilityForm>,
) -> Response {
    let (u, _) = match user_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if crate::name::RepoName::parse(&f.name).is_err() {
        return forbidden("Not a repository name.");
    }
    if !sets_visibility(&st, &u, &f.name).await {
        return forbidden(
            "Administrators, the organisation's admins and the namespace's owner only.",
        );
    }
    let public = f.public == "true";
    let (meta, name) = (st.meta.clone(), f.name.clone());
    if off(move || meta.set_visibility(&name, public))
        .await
        .is_none()
    {
        return unavailable(
            "The visibility could not be changed (the registry's database did not answer); try again.",
        );
    }
    st.auth
        .audit(
            &u,
            "repo.visibility",
            &f.name,
            if public { "public" } else { "private" },
            "",
        )
        .await;
    redirect(&format!("/ui/repo?name={}", q(&f.name)))
}

/// `GET /ui/admin/users`: the users (administrators only; others get 403).
pub async fn admin_users(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (u, s) = match admin_page(&st, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    users_page(&st, u, s, "").await
}

async fn users_page(st: &Arc<AppState>, u: String, s: Session, notice: &str) -> Response {
    let meta = st.meta.clone();
    let users = off(move || meta.users()).await.unwrap_or_default();
    let rows: String = users
        .iter()
        .map(|r| {
            let remove = if r.name == u {
                String::new()
            } else {
                format!(
                    "<form method=\"post\" action=\"/ui/admin/users/remove\" class=\"inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"name\" value=\"{}\">\
                     <button type=\"submit\" aria-label=\"Remove user {}\">Remove</button></form>",
                    esc(&s.csrf),
                    esc(&r.name),
                    esc(&r.name)
                )
            };
            let others = if r.name == u {
                "<a href=\"/ui/account\">Your account</a>".to_string()
            } else {
                format!(
                    "<form method=\"post\" action=\"/ui/admin/users/admin\" class=\"inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"name\" value=\"{name}\">\
                     <input type=\"hidden\" name=\"admin\" value=\"{grant}\">\
                     <button type=\"submit\" aria-label=\"{what} {name}\">{what}</button></form> \
                     <form method=\"post\" action=\"/ui/admin/users/password\" class=\"inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"name\" value=\"{name}\">\
                     <label for=\"pw-{name}\">New password for {name}</label>\
                     <input id=\"pw-{name}\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
                     <button type=\"submit\">Set password</button></form>",
                    csrf = esc(&s.csrf),
                    name = esc(&r.name),
                    grant = !r.admin,
                    what = if r.admin {
                        "Revoke administrator"
                    } else {
                        "Make administrator"
                    },
                )
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{remove} {others}</td></tr>",
                esc(&r.name),
                if r.admin { "administrator" } else { "user" },
                esc(&when(r.created_at))
            )
        })
        .collect();
    let body = format!(
        "{notice}<table><caption>{} users</caption><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Role</th>\
         <th scope=\"col\">Created</th><th scope=\"col\">Action</th></tr></thead><tbody>{rows}</tbody></table>\
         <h2>Add a user</h2><form method=\"post\" action=\"/ui/admin/users\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"name\">Name</label><input id=\"name\" name=\"name\" required>\
         <label for=\"new-password\">Password (at least 8 characters)</label>\
         <input id=\"new-password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
         <label><input type=\"checkbox\" name=\"admin\" value=\"true\"> Administrator</label>\
         <div><button type=\"submit\">Add user</button></div></form>\
         <p><a href=\"/ui/admin/orgs\">Organisations and their members</a></p>",
        users.len(),
        csrf = esc(&s.csrf),
    );
    page(StatusCode::OK, "Users", Some(&Viewer::User(u, s)), &body)
}

/// The signed-in user and session when the form's token is the session's; otherwise the
/// answer to give.
async fn user_form(
    st: &Arc<AppState>,
    h: &HeaderMap,
    csrf: &str,
) -> Result<(String, Session), Response> {
    let (u, s) = user(st, h).await?;
    match csrf_refusal(csrf, &s) {
        Some(r) => Err(r),
        None => Ok((u, s)),
    }
}

/// The 403 to answer when `csrf` is not the session's token.
fn csrf_refusal(csrf: &str, s: &Session) -> Option<Response> {
    (!same_token(csrf, &s.csrf))
        .then(|| forbidden("The form did not come from this site (CSRF token missing or wrong)."))
}

/// What a user manages: every organisation (a registry administrator), or the ones they are
/// an admin of (members' roles, their repositories' visibility).
enum Manages {
    All,
    Orgs(Vec<String>),
}

impl Manages {
    fn org(&self, org: &str) -> bool {
        match self {
            Manages::All => true,
            Manages::Orgs(o) => o.iter().any(|x| x == org),
        }
    }

    fn anything(&self) -> bool {
        !matches!(self, Manages::Orgs(o) if o.is_empty())
    }
}

/// Whether `user` may switch `repo`'s visibility: an administrator, an admin of the
/// organisation owning its namespace, or the user whose namespace it is.
async fn sets_visibility(st: &Arc<AppState>, user: &str, repo: &str) -> bool {
    let ns = super::auth::policy::namespace(repo);
    ns == user || manages(st, user).await.org(ns)
}

async fn manages(st: &Arc<AppState>, user: &str) -> Manages {
    if is_admin(st, user).await {
        return Manages::All;
    }
    let (meta, user) = (st.meta.clone(), user.to_string());
    Manages::Orgs(
        off(move || meta.orgs_administered_by(&user))
            .await
            .unwrap_or_default(),
    )
}

/// The signed-in user who manages something (an administrator, or an organisation's admin)
/// and what; anyone else gets the 403 page.
async fn manager_page(
    st: &Arc<AppState>,
    h: &HeaderMap,
) -> Result<(String, Session, Manages), Response> {
    let (u, s) = user(st, h).await?;
    let m = manages(st, &u).await;
    if !m.anything() {
        return Err(page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            Some(&Viewer::User(u, s)),
            "<p class=\"error\" role=\"alert\">Administrators and organisation admins only.</p>",
        ));
    }
    Ok((u, s, m))
}

/// [`user_form`], for administrators only.
async fn admin_form(
    st: &Arc<AppState>,
    h: &HeaderMap,
    csrf: &str,
) -> Result<(String, Session), Response> {
    let (u, s) = user_form(st, h, csrf).await?;
    if !is_admin(st, &u).await {
        return Err(forbidden("Administrators only."));
    }
    Ok((u, s))
}

/// The administrator looking at an admin page; anyone else gets its 403 page.
async fn admin_page(st: &Arc<AppState>, h: &HeaderMap) -> Result<(String, Session), Response> {
    let (u, s) = user(st, h).await?;
    if !is_admin(st, &u).await {
        return Err(page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            Some(&Viewer::User(u, s)),
            "<p class=\"error\" role=\"alert\">Administrators only.</p>",
        ));
    }
    Ok((u, s))
}

fn account_name_ok(name: &str) -> bool {
    !name.contains('/') && crate::name::RepoName::parse(name).is_ok()
}

fn alert(text: &str) -> String {
    format!("<p class=\"error\" role=\"alert\">{}</p>", esc(text))
}

#[derive(Deserialize)]
pub struct AddUserForm {
    csrf: String,
    name: String,
    password: String,
    admin: Option<String>,
}

/// `POST /ui/admin/users`: adds a user.
pub async fn add_user(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<AddUserForm>,
) -> Response {
    let (u, s) = match admin_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !account_name_ok(&f.name) {
        let msg =
            alert("A user name becomes a namespace: lowercase letters, digits and . _ - (no /).");
        return users_page(&st, u, s, &msg).await;
    }
    if let Some(why) = weak_password(&f.password) {
        return users_page(&st, u, s, &alert(why)).await;
    }
    let Some(hash) = hashed(&f.password).await else {
        return users_page(
            &st,
            u,
            s,
            &alert("The password could not be hashed; see the log."),
        )
        .await;
    };
    let admin = f.admin.as_deref() == Some("true");
    let (meta, name) = (st.meta.clone(), f.name.clone());
    let added = off(move || meta.add_user(&name, &hash, admin)).await;
    let notice = match added {
        Some(true) => {
            st.auth
                .audit(
                    &u,
                    "user.add",
                    &f.name,
                    if admin { "admin" } else { "" },
                    "",
                )
                .await;
            format!(
                "<p role=\"status\">User <strong>{}</strong> added.</p>",
                esc(&f.name)
            )
        }
        Some(false) => alert(&format!("There is a user {} already.", f.name)),
        None => alert("The user could not be stored; see the log."),
    };
    users_page(&st, u, s, &notice).await
}

#[derive(Deserialize)]
pub struct NameForm {
    csrf: String,
    name: String,
}

/// `POST /ui/admin/users/remove`: removes a user (never the last administrator, nor oneself).
pub async fn remove_user(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<NameForm>,
) -> Response {
    let (u, s) = match admin_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if f.name == u {
        return users_page(&st, u, s, &alert("You cannot remove yourself here.")).await;
    }
    let (meta, name) = (st.meta.clone(), f.name.clone());
    let removed = off(move || meta.remove_user(&name)).await;
    let notice = match removed {
        Some(super::auth::store::Removal::Removed) => {
            st.auth.audit(&u, "user.remove", &f.name, "", "").await;
            format!(
                "<p role=\"status\">User <strong>{}</strong> removed; their tokens are revoked.</p>",
                esc(&f.name)
            )
        }
        Some(super::auth::store::Removal::NoSuchUser) => {
            alert(&format!("There is no user {}.", f.name))
        }
        Some(super::auth::store::Removal::LastAdmin) => alert("That is the last administrator."),
        None => alert("The user could not be removed; see the log."),
    };
    users_page(&st, u, s, &notice).await
}

/// `GET /ui/admin/retention`: the retention rules, the configuration's and the ones added
/// here (administrators only).
pub async fn admin_retention(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (u, s) = match admin_page(&st, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    retention_page(&st, u, s, "").await
}

fn rule_cells(r: &reg_config::RetentionRule) -> String {
    let or_dash = |v: &str| {
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("<code>{}</code>", esc(v))
        }
    };
    format!(
        "<td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>",
        esc(&r.repositories),
        if r.keep_last == 0 {
            "-".to_string()
        } else {
            r.keep_last.to_string()
        },
        or_dash(&r.keep_newer_than),
        or_dash(&r.immutable_tags)
    )
}

const RULE_HEAD: &str = "<th scope=\"col\">Repositories</th><th scope=\"col\">Keep last</th>\
    <th scope=\"col\">Keep newer than</th><th scope=\"col\">Immutable tags</th>";

async fn retention_page(st: &Arc<AppState>, u: String, s: Session, notice: &str) -> Response {
    let configured: String = st
        .cfg
        .retention
        .iter()
        .map(|r| format!("<tr>{}</tr>", rule_cells(r)))
        .collect();
    let meta = st.meta.clone();
    let stored = off(move || meta.retention_rules())
        .await
        .unwrap_or_default();
    let rows: String = stored
        .iter()
        .map(|r| {
            format!(
                "<tr>{}<td>{} ({})</td><td><form method=\"post\" action=\"/ui/admin/retention/remove\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"id\" value=\"{}\">\
                 <button type=\"submit\" aria-label=\"Remove the rule for {}\">Remove</button></form></td></tr>",
                rule_cells(&r.rule),
                esc(&r.created_by),
                esc(&when(r.created_at)),
                esc(&s.csrf),
                r.id,
                esc(&r.rule.repositories)
            )
        })
        .collect();
    let body = format!(
        "{notice}<p>A repository's rule is the first whose pattern matches it: the configuration's \
         first, then the ones added here, oldest first. A rule keeps a tag when any of its keep \
         conditions holds (and every immutable tag); a rule without any keeps every tag. The \
         collector removes the rest: the <a href=\"/ui/admin/storage\">storage page</a>'s dry run \
         shows what would go. Immutable tags can be neither moved nor deleted from the moment a \
         rule is added.</p>\
         <table><caption>From the configuration ({n_cfg}; <code>registry.retention</code>, read-only here)</caption>\
         <thead><tr>{RULE_HEAD}</tr></thead><tbody>{configured}</tbody></table>\
         <table><caption>Added here ({n_db})</caption><thead><tr>{RULE_HEAD}<th scope=\"col\">Added by</th>\
         <th scope=\"col\">Action</th></tr></thead><tbody>{rows}</tbody></table>\
         <h2>Add a rule</h2><form method=\"post\" action=\"/ui/admin/retention\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"repositories\">Repositories (a glob: <code>team/*</code>, <code>**</code>)</label>\
         <input id=\"repositories\" name=\"repositories\" required>\
         <label for=\"keep_last\">Keep the newest N tags (0: no count rule)</label>\
         <input id=\"keep_last\" name=\"keep_last\" type=\"number\" min=\"0\" value=\"0\">\
         <label for=\"keep_newer_than\">Keep tags pushed within (e.g. 30d; empty: no age rule)</label>\
         <input id=\"keep_newer_than\" name=\"keep_newer_than\">\
         <label for=\"immutable_tags\">Immutable tags (a glob: <code>v*</code>; empty: none)</label>\
         <input id=\"immutable_tags\" name=\"immutable_tags\">\
         <div><button type=\"submit\">Add rule</button></div></form>",
        n_cfg = st.cfg.retention.len(),
        n_db = stored.len(),
        csrf = esc(&s.csrf),
    );
    page(
        StatusCode::OK,
        "Retention",
        Some(&Viewer::User(u, s)),
        &body,
    )
}

#[derive(Deserialize)]
pub struct RuleForm {
    csrf: String,
    repositories: String,
    #[serde(default)]
    keep_last: String,
    #[serde(default)]
    keep_newer_than: String,
    #[serde(default)]
    immutable_tags: String,
}

/// `POST /ui/admin/retention`: stores a retention rule (checked as the configuration's are).
pub async fn add_retention(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<RuleForm>,
) -> Response {
    let (u, s) = match admin_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let keep_last = match f.keep_last.trim() {
        "" => 0,
        n => match n.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                return retention_page(
                    &st,
                    u,
                    s,
                    &alert("Keep last is a whole number (0 for none)."),
                )
                .await
            }
        },
    };
    let rule = reg_config::RetentionRule {
        repositories: f.repositories.trim().to_string(),
        keep_last,
        keep_newer_than: f.keep_newer_than.trim().to_string(),
        immutable_tags: f.immutable_tags.trim().to_string(),
    };
    if let Err(e) = super::retention::check(&rule) {
        return retention_page(&st, u, s, &alert(&format!("The rule was not added: {e}"))).await;
    }
    let (meta, r, by) = (st.meta.clone(), rule.clone(), u.clone());
    let notice = match off(move || meta.add_retention_rule(&r, &by)).await {
        Some(id) => {
            st.retention.changed();
            st.auth
                .audit(
                    &u,
                    "retention.add",
                    &rule.repositories,
                    &format!("rule {id}"),
                    "",
                )
                .await;
            format!(
                "<p role=\"status\">Rule {id} for <code>{}</code> added.</p>",
                esc(&rule.repositories)
            )
        }
        None => alert("The rule could not be stored; see the log."),
    };
    retention_page(&st, u, s, &notice).await
}

#[derive(Deserialize)]
pub struct RuleIdForm {
    csrf: String,
    id: i64,
}

/// `POST /ui/admin/retention/remove`: removes a stored rule.
pub async fn remove_retention(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<RuleIdForm>,
) -> Response {
    let (u, s) = match admin_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (meta, id) = (st.meta.clone(), f.id);
    let notice = match off(move || meta.remove_retention_rule(id)).await {
        Some(true) => {
            st.retention.changed();
            st.auth
                .audit(&u, "retention.remove", "", &format!("rule {id}"), "")
                .await;
            format!("<p role=\"status\">Rule {id} removed.</p>")
        }
        Some(false) => alert("There is no such rule."),
        None => alert("The rule could not be removed; see the log."),
    };
    retention_page(&st, u, s, &notice).await
}

/// Why `password` will not do as a new password, if it will not.
fn weak_password(password: &str) -> Option<&'static str> {
    (password.chars().count() < 8)
        .then_some("The password is too short: use at least 8 characters.")
}

/// `password`'s hash (on the blocking pool: argon2 is slow on purpose).
async fn hashed(password: &str) -> Option<String> {
    let pw = password.to_string();
    off(move || super::auth::hash_password(&pw)).await
}

#[derive(Deserialize)]
pub struct AdminRightsForm {
    csrf: String,
    name: String,
    admin: String,
}

/// `POST /ui/admin/users/admin`: grants or takes administrator rights (not one's own, never
/// the last administrator's).
pub async fn set_admin(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<AdminRightsForm>,
) -> Response {
    let (u, s) = match admin_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if f.name == u {
        return users_page(&st, u, s, &alert("You cannot change your own rights.")).await;
    }
    let admin = f.admin == "true";
    let (meta, name) = (st.meta.clone(), f.name.clone());
    let notice = match off(move || meta.set_admin(&name, admin)).await {
        Some(super::auth::store::AdminChange::Changed) => {
            let action = if admin { "user.admin" } else { "user.unadmin" };
            st.auth.audit(&u, action, &f.name, "", "").await;
            format!(
                "<p role=\"status\"><strong>{}</strong> is {} now.</p>",
                esc(&f.name),
                if admin { "an administrator" } else { "a user" }
            )
        }
        Some(super::auth::store::AdminChange::NoSuchUser) => {
            alert(&format!("There is no user {}.", f.name))
        }
        Some(super::auth::store::AdminChange::LastAdmin) => {
            alert("That is the last administrator.")
        }
        None => alert("The change could not be stored; see the log."),
    };
    users_page(&st, u, s, &notice).await
}

#[derive(Deserialize)]
pub struct SetPasswordForm {
    csrf: String,
    name: String,
    password: String,
}

/// `POST /ui/admin/users/password`: an administrator sets another user's password (their
/// sessions, tokens made from logins and refresh tokens end).
pub async fn set_password(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<SetPasswordForm>,
) -> Response {
    let (u, s) = match admin_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if f.name == u {
        return redirect("/ui/account");
    }
    if let Some(why) = weak_password(&f.password) {
        return users_page(&st, u, s, &alert(why)).await;
    }
    let Some(hash) = hashed(&f.password).await else {
        return users_page(
            &st,
            u,
            s,
            &alert("The password could not be hashed; see the log."),
        )
        .await;
    };
    let (meta, name) = (st.meta.clone(), f.name.clone());
    let notice = match off(move || meta.set_password(&name, &hash)).await {
        Some(true) => {
            st.auth.audit(&u, "user.passwd", &f.name, "", "").await;
            format!(
                "<p role=\"status\">The password of <strong>{}</strong> is changed; their sessions ended.</p>",
                esc(&f.name)
            )
        }
        Some(false) => alert(&format!("There is no user {}.", f.name)),
        None => alert("The password could not be stored; see the log."),
    };
    users_page(&st, u, s, &notice).await
}

/// `GET /ui/account`: the signed-in user's own password.
pub async fn account(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match user(&st, &headers).await {
        Ok((u, s)) => account_page(u, s, "", StatusCode::OK),
        Err(r) => r,
    }
}

fn account_page(u: String, s: Session, notice: &str, status: StatusCode) -> Response {
    let body = format!(
        "{notice}<h2>Change your password</h2><form method=\"post\" action=\"/ui/account/password\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"current\">Current password</label>\
         <input id=\"current\" name=\"current\" type=\"password\" autocomplete=\"current-password\" required>\
         <label for=\"password\">New password (at least 8 characters)</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
         <label for=\"confirm\">New password again</label>\
         <input id=\"confirm\" name=\"confirm\" type=\"password\" autocomplete=\"new-password\" required>\
         <div><button type=\"submit\">Change password</button></div></form>\
         <p>Changing it ends your other sessions and the logins of clients that used the old one \
         (<code>docker login</code> again); access tokens stay.</p>",
        csrf = esc(&s.csrf),
    );
    page(
        status,
        &format!("Account {u}"),
        Some(&Viewer::User(u, s)),
        &body,
    )
}

#[derive(Deserialize)]
pub struct OwnPasswordForm {
    csrf: String,
    current: String,
    password: String,
    confirm: String,
}

/// `POST /ui/account/password`: a user changes their own password (the current one checked
/// as a login is, slow-down included); this browser gets a new session, the others end.
pub async fn change_password(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    ClientAddr(client): ClientAddr,
    Form(f): Form<OwnPasswordForm>,
) -> Response {
    let (u, s) = match user_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if f.password != f.confirm {
        return account_page(
            u,
            s,
            &alert("The new passwords differ."),
            StatusCode::BAD_REQUEST,
        );
    }
    if let Some(why) = weak_password(&f.password) {
        return account_page(u, s, &alert(why), StatusCode::BAD_REQUEST);
    }
    match st.auth.check_password(&u, &f.current, &client).await {
        Ok(Some(Principal::User(who))) if who == u => {}
        Ok(_) => {
            return account_page(
                u,
                s,
                &alert("The current password is wrong."),
                StatusCode::UNAUTHORIZED,
            )
        }
        Err(e) => return e.into_response(),
    }
    let Some(hash) = hashed(&f.password).await else {
        return account_page(
            u,
            s,
            &alert("The password could not be hashed; see the log."),
            StatusCode::INTERNAL_SERVER_ERROR,
        );
    };
    let (meta, name) = (st.meta.clone(), u.clone());
    if off(move || meta.set_password(&name, &hash)).await != Some(true) {
        return account_page(
            u,
            s,
            &alert("The password could not be stored; see the log."),
            StatusCode::INTERNAL_SERVER_ERROR,
        );
    }
    st.auth.audit(&u, "user.passwd", &u, "own", &client).await;
    // The change ended every session of this user, this one too: give this browser a new one.
    let Some((id, fresh)) = Sessions::create(&st, &u).await else {
        return redirect("/ui/login");
    };
    let mut r = account_page(
        u,
        fresh,
        "<p role=\"status\">Your password is changed; your other sessions ended.</p>",
        StatusCode::OK,
    );
    if let Ok(v) =
        header::HeaderValue::from_str(&set_cookie(&st, COOKIE, &id, SESSION_TTL.as_secs()))
    {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `GET /ui/admin/orgs`: organisations and their members, for administrators (all of them,
/// and a form to create one) and organisation admins (theirs).
pub async fn admin_orgs(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match manager_page(&st, &headers).await {
        Ok((u, s, m)) => orgs_page(&st, u, s, &m, "").await,
        Err(r) => r,
    }
}

/// The organisations `m` covers, and their forms.
async fn orgs_page(
    st: &Arc<AppState>,
    u: String,
    s: Session,
    m: &Manages,
    notice: &str,
) -> Response {
    let meta = st.meta.clone();
    let orgs: Vec<_> = off(move || meta.orgs_with_members())
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|(o, _)| m.org(o))
        .collect();
    let create = if matches!(m, Manages::All) {
        format!(
            "<h2>New organisation</h2><form method=\"post\" action=\"/ui/admin/orgs\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"org-name\">Name (its namespace: name/…)</label><input id=\"org-name\" name=\"name\" required>\
             <div><button type=\"submit\">Create</button></div></form>",
            csrf = esc(&s.csrf)
        )
    } else {
        String::new()
    };
    let rows: String = orgs
        .iter()
        .map(|(o, members)| {
            let m: Vec<String> = members
                .iter()
                .map(|(user, role)| format!("{} ({})", esc(user), esc(role)))
                .collect();
            format!("<tr><td>{}</td><td>{}</td></tr>", esc(o), m.join(", "))
        })
        .collect();
    let body = format!(
        "{notice}<table><caption>{} organisations</caption><thead><tr><th scope=\"col\">Organisation</th>\
         <th scope=\"col\">Members (role)</th></tr></thead><tbody>{rows}</tbody></table>{create}\
         <h2>Set a member's role</h2><form method=\"post\" action=\"/ui/admin/orgs/member\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"member-org\">Organisation</label><input id=\"member-org\" name=\"org\" required>\
         <label for=\"member-user\">User</label><input id=\"member-user\" name=\"user\" required>\
         <label for=\"member-role\">Role</label><select id=\"member-role\" name=\"role\">\
         <option value=\"read\">read</option><option value=\"write\">write</option>\
         <option value=\"admin\">admin</option><option value=\"none\">none (remove)</option></select>\
         <div><button type=\"submit\">Set role</button></div></form>",
        orgs.len(),
        csrf = esc(&s.csrf),
    );
    page(
        StatusCode::OK,
        "Organisations",
        Some(&Viewer::User(u, s)),
        &body,
    )
}

/// `POST /ui/admin/orgs`: creates an organisation.
pub async fn add_org(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<NameForm>,
) -> Response {
    let (u, s) = match admin_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !account_name_ok(&f.name) {
        let msg = alert(
            "An organisation's name is its namespace: lowercase letters, digits and . _ - (no /).",
        );
        return orgs_page(&st, u, s, &Manages::All, &msg).await;
    }
    let (meta, name) = (st.meta.clone(), f.name.clone());
    let added = off(move || meta.add_org(&name)).await;
    let notice = match added {
        Some(true) => {
            st.auth.audit(&u, "org.add", &f.name, "", "").await;
            format!(
                "<p role=\"status\">Organisation <strong>{}</strong> created.</p>",
                esc(&f.name)
            )
        }
        Some(false) => alert(&format!("There is an organisation {} already.", f.name)),
        None => alert("The organisation could not be stored; see the log."),
    };
    orgs_page(&st, u, s, &Manages::All, &notice).await
}

#[derive(Deserialize)]
pub struct MemberForm {
    csrf: String,
    org: String,
    user: String,
    role: String,
}

/// `POST /ui/admin/orgs/member`: sets (or removes) a member's role.
pub async fn set_member(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<MemberForm>,
) -> Response {
    let (u, s) = match user_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let m = manages(&st, &u).await;
    if !m.org(&f.org) {
        return forbidden("Administrators and the organisation's admins only.");
    }
    let role = match f.role.as_str() {
        "none" => None,
        r => match super::auth::policy::Role::parse(r) {
            Some(role) => Some(role),
            None => {
                return orgs_page(
                    &st,
                    u,
                    s,
                    &m,
                    &alert("The role is read, write, admin or none."),
                )
                .await
            }
        },
    };
    let (meta, org, member) = (st.meta.clone(), f.org.clone(), f.user.clone());
    let checked =
        tokio::task::spawn_blocking(move || -> Result<Option<&'static str>, MetaError> {
            if !meta.org_exists(&org)? {
                return Ok(Some("There is no such organisation."));
            }
            if meta.password_hash(&member)?.is_none() {
                return Ok(Some("There is no such user."));
            }
            meta.set_member(&org, &member, role)?;
            Ok(None)
        })
        .await;
    let notice = match checked {
        Ok(Ok(None)) => {
            st.auth
                .audit(
                    &u,
                    "org.member",
                    &format!("{}/{}", f.org, f.user),
                    &f.role,
                    "",
                )
                .await;
            format!(
                "<p role=\"status\">{} in {}: {}.</p>",
                esc(&f.user),
                esc(&f.org),
                esc(&f.role)
            )
        }
        Ok(Ok(Some(why))) => alert(why),
        _ => alert("The role could not be stored; see the log."),
    };
    // (Read again: the change may have been to this user's own role.)
    let m = manages(&st, &u).await;
    orgs_page(&st, u, s, &m, &notice).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_year_9999_are_written_not_panicked_on() {
        assert_eq!(when(0), "1970-01-01T00:00:00Z");
        assert!(when(i64::MAX / 2).ends_with("s after 1970"));
    }

    #[test]
    fn audit_targets_name_their_namespace() {
        for t in [
            "team/app:v1",
            "team/app@sha256:ab",
            "team/carol",
            "team",
            "team/*",
        ] {
            assert_eq!(audit_namespace(t), "team", "{t}");
        }
        assert_eq!(audit_namespace(""), "");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
    }

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; reg_session=abc; b=2".parse().expect("header"),
        );
        assert_eq!(cookie_of(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie_of(&h, PRE_COOKIE), None);
    }
}

/// Horizontal bars as inline SVG (no script): `(label, bytes)`, largest first.
fn bars(caption: &str, items: &[(String, u64)]) -> String {
    let max = items.iter().map(|(_, b)| *b).max().unwrap_or(0).max(1);
    let row = 22;
    let height = row * items.len().max(1) + 4;
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg role=\"img\" aria-label=\"{}\" width=\"720\" height=\"{height}\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\" font-size=\"12\">",
        esc(caption),
        esc(caption)
    );
    for (i, (label, bytes)) in items.iter().enumerate() {
        let y = i * row + 2;
        let w = (*bytes as f64 / max as f64 * 360.0).round().max(1.0);
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"250\" y=\"{}\" width=\"{w}\" height=\"16\" fill=\"#0b3d62\"></rect>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            y + 13,
            esc(label),
            y,
            256.0 + w,
            y + 13,
            esc(&super::quota::human(*bytes))
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

async fn storage_page(st: &Arc<AppState>, u: String, s: Session, notice: &str) -> Response {
    let meta = st.meta.clone();
    let mut repos = off(move || meta.storage_sizes())
        .await
        .map(|(repos, _)| repos)
        .unwrap_or_default();
    let mut namespaces: std::collections::BTreeMap<String, u64> = Default::default();
    for (r, size) in &repos {
        let ns = r.split('/').next().unwrap_or(r).to_string();
        *namespaces.entry(ns).or_default() += size;
    }
    let mut namespaces: Vec<(String, u64)> = namespaces.into_iter().collect();
    namespaces.sort_by_key(|b| std::cmp::Reverse(b.1));
    namespaces.truncate(15);
    repos.sort_by_key(|b| std::cmp::Reverse(b.1));
    repos.truncate(15);
    let last_gc = st
        .last_gc
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .map(|(at, r)| {
            format!(
                "<p>Last collection by this process: {} — {} tags, {} manifests, {} blobs, {} freed, in {:.1} s.</p>",
                esc(&when(at)),
                r.tags.len(),
                r.manifests.len(),
                r.blobs.len(),
                esc(&super::quota::human(r.bytes)),
                r.seconds
            )
        })
        .unwrap_or_else(|| "<p>No collection has run in this process yet.</p>".into());
    let off = reg_config::parse_duration(&st.cfg.gc.interval).map_or(true, |d| d.is_zero());
    let next = if off {
        "Scheduled collections are off (registry.gc.interval).".to_string()
    } else {
        let at = st.next_gc.load(std::sync::atomic::Ordering::Relaxed);
        format!(
            "Scheduled every {} (registry.gc.interval){}.",
            st.cfg.gc.interval,
            if at > 0 {
                format!("; the next by this process at {}", when(at))
            } else {
                String::new()
            }
        )
    };
    let body = format!(
        "{notice}{}{}<h2>Garbage collection</h2>{last_gc}<p>{}</p>\
         <form method=\"post\" action=\"/ui/admin/storage\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" name=\"run\" value=\"dry\">Dry run: what would go</button> \
         <button type=\"submit\" name=\"run\" value=\"now\">Collect now</button></form>",
        bars("Stored bytes by namespace (a blob shared by repositories counts in each)", &namespaces),
        bars("The largest repositories", &repos),
        esc(&next),
        esc(&s.csrf),
    );
    page(StatusCode::OK, "Storage", Some(&Viewer::User(u, s)), &body)
}

/// `GET /ui/admin/storage`: storage by namespace and repository as charts, the last
/// collection, and buttons for a dry run or a collection (administrators only).
pub async fn admin_storage(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (u, s) = match admin_page(&st, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    storage_page(&st, u, s, "").await
}

#[derive(Deserialize)]
pub struct GcForm {
    csrf: String,
    run: String,
}

/// `POST /ui/admin/storage`: a dry run (`run=dry`) or a collection (`run=now`).
pub async fn run_gc(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<GcForm>,
) -> Response {
    let (u, s) = match admin_form(&st, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut opts = match super::gc_options(&st.cfg) {
        Ok(o) => o,
        Err(e) => return forbidden(&e.to_string()),
    };
    opts.dry_run = f.run != "now";
    let st2 = st.clone();
    let result =
        tokio::task::spawn_blocking(move || super::gc::collect(&st2.meta, &st2.store, &opts)).await;
    let notice = match result {
        Ok(Ok(r)) => {
            st.record_gc(&r);
            st.auth
                .audit(
                    &u,
                    if r.dry_run { "gc.dry_run" } else { "gc.run" },
                    "",
                    &format!("{} blobs, {} bytes", r.blobs.len(), r.bytes),
                    "",
                )
                .await;
            let mut items: String = r
                .tags
                .iter()
                .chain(&r.manifests)
                .map(|t| format!("<li><code>{}</code></li>", esc(t)))
                .collect();
            items.push_str(&format!(
                "<li>{} blobs, {}</li>",
                r.blobs.len(),
                esc(&super::quota::human(r.bytes))
            ));
            format!(
                "<div role=\"status\"><p>{}</p><ul>{items}</ul></div>",
                if r.dry_run {
                    "A collection now would remove:"
                } else {
                    "Collected:"
                }
            )
        }
        Ok(Err(e)) => format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            esc(&e.to_string())
        ),
        Err(e) => format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            esc(&e.to_string())
        ),
    };
    storage_page(&st, u, s, &notice).await
}
