//! The finishing touches of a tool people live in: shell completions and man pages generated
//! from the real command tree, and the systemd units in `dist/systemd`.

use std::process::Command;

use reg_tests::{peer, reg_bin, skip};

fn reg(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(reg_bin())
        .args(args)
        .output()
        .expect("run reg");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bash_completion_loads_and_completes_verbs_and_subcommands() {
    let (ok, script, err) = reg(&["completion", "bash"]);
    assert!(ok, "{err}");
    let Some(bash) = peer("bash") else {
        skip("bash is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("reg.bash");
    std::fs::write(&file, &script).expect("write");
    // Source it, then ask the completion function what follows `reg ad` and `reg admin quota `.
    let probe = format!(
        "source {}; complete -p reg; \
         COMP_WORDS=(reg ad); COMP_CWORD=1; COMP_LINE='reg ad'; COMP_POINT=6; _reg reg ad reg; echo \"1:${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(reg admin quota ''); COMP_CWORD=3; COMP_LINE='reg admin quota '; COMP_POINT=16; _reg reg '' quota; echo \"2:${{COMPREPLY[*]}}\"",
        file.display()
    );
    let out = Command::new(bash)
        .args(["-c", &probe])
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("-F _reg reg"), "{text}");
    let line = |n: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{n}:")))
            .unwrap_or("")
            .to_string()
    };
    assert!(line("1").split_whitespace().any(|w| w == "admin"), "{text}");
    let quota: Vec<String> = line("2").split_whitespace().map(str::to_string).collect();
    for want in ["set", "ls", "rm"] {
        assert!(quota.iter().any(|w| w == want), "{want} in {quota:?}");
    }
}

#[test]
fn zsh_and_fish_completions_name_the_commands() {
    for (shell, needle) in [("zsh", "#compdef reg"), ("fish", "complete -c reg")] {
        let (ok, script, err) = reg(&["completion", shell]);
        assert!(ok, "{shell}: {err}");
        assert!(
            script.contains(needle),
            "{shell}: {}",
            &script[..script.len().min(200)]
        );
        assert!(script.contains("quota"), "{shell} completes admin quota");
    }
    let (ok, _, err) = reg(&["completion", "tcsh"]);
    assert!(!ok && err.contains("possible values"), "{err}");
}

#[test]
fn man_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, out, err) = reg(&["man", "--dir", &dir.path().display().to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains("man pages in"), "{out}");
    for page in [
        "reg.1",
        "reg-run.1",
        "reg-admin-quota-set.1",
        "reg-node-serve.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {}",
            &text[..text.len().min(200)]
        );
    }
    let run = std::fs::read_to_string(dir.path().join("reg-run.1")).expect("reg-run.1");
    assert!(run.contains("publish"), "reg-run(1) documents --publish");
    // Hidden internals get no page.
    assert!(!dir.path().join("reg-node-monitor.1").exists());
    let (ok, page, _) = reg(&["man"]);
    assert!(ok && page.contains(".TH"), "reg man prints reg(1)");
    if let Some(man) = peer("man") {
        let out = Command::new(man)
            .args([
                "-l",
                &dir.path()
                    .join("reg-admin-quota-set.1")
                    .display()
                    .to_string(),
            ])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("man -l");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("repository"),
            "{text}"
        );
    }
}

#[test]
fn systemd_units_keep_containers_across_restarts_and_run_real_commands() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd");
    for (unit, verb) in [("reg.service", "serve"), ("reg-node.service", "node serve")] {
        let text = std::fs::read_to_string(root.join(unit)).expect(unit);
        let keys: Vec<(&str, &str)> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        let get = |k: &str| keys.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        assert_eq!(get("Delegate"), Some("yes"), "{unit}");
        assert_eq!(get("KillMode"), Some("process"), "{unit}");
        assert!(
            get("LimitNOFILE")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                >= 65536,
            "{unit}"
        );
        let exec = get("ExecStart").expect("ExecStart");
        assert_eq!(exec, format!("/usr/local/bin/reg {verb}"), "{unit}");
        // The command it runs exists: its help answers.
        let mut args: Vec<&str> = verb.split(' ').collect();
        args.push("--help");
        let (ok, _, err) = reg(&args);
        assert!(ok, "reg {verb} --help: {err}");
    }
}
