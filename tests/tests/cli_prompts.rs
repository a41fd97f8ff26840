//! `reg login` and `reg admin user add` ask for what is missing when standard input is a
//! terminal (the password without echo), and say how to give it when it is not.

use std::process::{Command, Stdio};

use reg_tests::*;

/// Runs `reg ARGS…` on a terminal (`script` gives it one), answering each prompt of `dialog`
/// once it shows: (exit code, what the terminal showed).
fn on_a_terminal(
    script: &std::path::Path,
    data: &std::path::Path,
    args: &str,
    dialog: &[(&str, &str)],
) -> (i32, String) {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let command = format!("{} {args}", reg_bin().display());
    let mut child = Command::new(script)
        .args(["-qefc", &command, "/dev/null"])
        .env("REG_CONFIG_DIR", data.join("client"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script");
    let shown = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().expect("stdout");
    let sink = shown.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    let mut stdin = child.stdin.take().expect("stdin");
    let mut seen = 0;
    for (prompt, answer) in dialog {
        // The prompt's next occurrence, then the answer (typed after it, as a person would).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let text = shown.lock().map(|s| s.clone()).unwrap_or_default();
            if let Some(at) = text[seen..].find(prompt) {
                seen += at + prompt.len();
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {prompt:?} in {text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        stdin
            .write_all(format!("{answer}\n").as_bytes())
            .expect("type");
    }
    let status = child.wait().expect("script");
    drop(stdin);
    let _ = reader.join();
    let text = shown.lock().map(|s| s.clone()).unwrap_or_default();
    (status.code().unwrap_or(-1), text)
}

#[test]
fn login_and_user_add_prompt_on_a_terminal_and_refuse_without_one() {
    let Some(script) = peer("script") else {
        return;
    };
    let reg = Registry::start();
    let data = reg.data_dir().to_path_buf();
    // The first admin, asked for its password twice on the terminal.
    let (code, shown) = on_a_terminal(
        &script,
        &data,
        &format!("admin --data {} user add root --admin", data.display()),
        &[
            ("Password:", "s3cret-pass"),
            ("Repeat the password:", "s3cret-pass"),
        ],
    );
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("Password:") && shown.contains("Repeat the password:"),
        "{shown}"
    );
    assert!(
        !shown.contains("s3cret-pass"),
        "the password is not echoed: {shown}"
    );
    // Without a terminal and without --password-stdin: told how.
    let out = reg_on(&data)
        .args(["admin", "--data"])
        .arg(&data)
        .args(["user", "add", "other"])
        .stdin(Stdio::null())
        .output()
        .expect("reg admin");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));

    // login: username and password asked for, the password unechoed.
    let (code, shown) = on_a_terminal(
        &script,
        &data,
        &format!("login {}", reg.host),
        &[("Username:", "root"), ("Password:", "s3cret-pass")],
    );
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("Username:") && shown.contains("Password:"),
        "{shown}"
    );
    assert!(shown.contains("Login Succeeded"), "{shown}");
    assert!(!shown.contains("s3cret-pass"), "{shown}");
    let out = reg_on(&data)
        .args(["login", &reg.host])
        .env("REG_CONFIG_DIR", data.join("client"))
        .stdin(Stdio::null())
        .output()
        .expect("reg login");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("non TTY device"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
