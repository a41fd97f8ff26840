//! `reg compose` end to end on a real node: a two-service project (a healthy-gated dependency,
//! a named volume, a published port, interpolation from the environment and `.env`) brought up,
//! left alone when unchanged, recreated when changed, scaled, listed, followed, read by the
//! real docker-compose as a Compose project, and taken down with everything it made.

#[path = "shared/node.rs"]
mod shared_node;
use shared_node::*;

use std::path::Path;

const FILE: &str = r#"
services:
  db:
    image: node/run:v1
    command: ["/bin/busybox", "sh", "-c", "echo db-up; /bin/busybox sleep 1; /bin/busybox touch /ready; exec /bin/busybox sleep 1000"]
    healthcheck:
      test: ["CMD", "/bin/busybox", "test", "-e", "/ready"]
      interval: 1s
      retries: 60
    volumes:
      - data:/data
    init: true
    x-note: an extension, not part of the model
  web:
    image: node/run:v1
    command: /bin/busybox sh -c "echo web says $$GREETING; exec /bin/busybox sleep 1000"
    environment:
      GREETING: ${GREETING:-hello}
      FROM_DOTENV:
    depends_on:
      db:
        condition: service_healthy
    ports:
      - "127.0.0.1::80"
    labels:
      tier: front
    init: true
    stop_grace_period: 5s
volumes:
  data:
"#;

/// `reg compose ARGS…` in `dir`, with `env`: (exit code, stdout, stderr).
fn compose(n: &Node, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(reg_tests::reg_bin());
    cmd.arg("compose")
        .args(args)
        .current_dir(dir)
        .env("REG_HOST", &n.host)
        .env("REG_CONFIG_DIR", "/nonexistent-reg-config")
        .env_remove("GREETING")
        .env_remove("COMPOSE_PROJECT_NAME")
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PROFILES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("reg compose");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(n: &Node, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let (code, out, err) = compose(n, dir, args, env);
    assert_eq!(code, 0, "reg compose {args:?}: {err}");
    (out, err)
}

fn id(n: &Node, name: &str) -> String {
    n.inspect(name)["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn exists(n: &Node, what: &[&str]) -> bool {
    n.reg(what).0 == 0
}

#[test]
fn compose_up_is_health_gated_idempotent_and_down_removes_what_it_made() {
    let Some(n) = node() else { return };
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shop");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::write(dir.join("compose.yaml"), FILE).expect("compose.yaml");
    std::fs::write(dir.join(".env"), "FROM_DOTENV=dotenv-value\n").expect(".env");

    // The model as interpolated, the project named after its directory.
    let (out, _) = ok(&n, &dir, &["config"], &[]);
    assert!(
        out.contains("name: shop") && out.contains("GREETING: hello"),
        "{out}"
    );
    assert!(!out.contains("x-note"), "{out}");

    let (_, err) = ok(&n, &dir, &["up", "-d"], &[]);
    assert!(err.contains("Container shop-web-1  Started"), "{err}");
    // web started only once db was healthy: a passing probe ended before web's start.
    let db = n.inspect("shop-db-1");
    let web = n.inspect("shop-web-1");
    let started = web["State"]["StartedAt"]
        .as_str()
        .expect("StartedAt")
        .to_string();
    let healthy_by = db["State"]["Health"]["Log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["ExitCode"] == 0)
        .filter_map(|p| p["End"].as_str())
        .min()
        .expect("a passing probe of db")
        .to_string();
    assert!(
        healthy_by < started,
        "db healthy at {healthy_by}, web started at {started}"
    );
    // docker's labels, the environment from the shell, `.env` and defaults.
    let labels = &web["Config"]["Labels"];
    assert_eq!(labels["com.docker.compose.project"], "shop");
    assert_eq!(labels["com.docker.compose.service"], "web");
    assert_eq!(labels["com.docker.compose.container-number"], "1");
    assert_eq!(labels["tier"], "front");
    assert_eq!(
        labels["com.docker.compose.depends_on"],
        "db:service_healthy:false"
    );
    let env: Vec<&str> = web["Config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        env.contains(&"GREETING=hello") && env.contains(&"FROM_DOTENV=dotenv-value"),
        "{env:?}"
    );
    assert!(exists(&n, &["network", "inspect", "shop_default"]));
    assert!(exists(&n, &["volume", "inspect", "shop_data"]));
    let (out, _) = ok(&n, &dir, &["ps"], &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("SERVICE"),
        "{out}"
    );
    assert!(
        out.contains("shop-db-1") && out.contains("shop-web-1"),
        "{out}"
    );
    assert!(
        out.contains("127.0.0.1:") && out.contains("->80/tcp"),
        "{out}"
    );

    // Unchanged: left alone.
    let (db_id, web_id) = (id(&n, "shop-db-1"), id(&n, "shop-web-1"));
    let (_, err) = ok(&n, &dir, &["up", "-d"], &[]);
    assert!(err.contains("Container shop-web-1  Running"), "{err}");
    assert_eq!(
        (id(&n, "shop-db-1"), id(&n, "shop-web-1")),
        (db_id.clone(), web_id.clone())
    );
    // A changed service is recreated; the other is not.
    ok(&n, &dir, &["up", "-d"], &[("GREETING", "changed")]);
    assert_eq!(id(&n, "shop-db-1"), db_id);
    assert_ne!(id(&n, "shop-web-1"), web_id);
    // Scaled up and down by number.
    ok(
        &n,
        &dir,
        &["up", "-d", "--scale", "web=2"],
        &[("GREETING", "changed")],
    );
    assert!(exists(&n, &["inspect", "shop-web-2"]));
    ok(
        &n,
        &dir,
        &["up", "-d", "--scale", "web=1"],
        &[("GREETING", "changed")],
    );
    assert!(!exists(&n, &["inspect", "shop-web-2"]));

    // Output with each container's name in front.
    let (out, _) = ok(&n, &dir, &["logs"], &[]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("shop-db-1") && l.ends_with("| db-up")),
        "{out}"
    );
    assert!(out.contains("| web says changed"), "{out}");

    // The real docker-compose sees the project (it reads the same labels).
    if let Some(dc) = reg_tests::peer("docker-compose") {
        let out = std::process::Command::new(dc)
            .args(["-p", "shop", "ps", "--services"])
            .current_dir(&dir)
            .env("DOCKER_HOST", &n.host)
            .output()
            .expect("docker-compose");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("db") && text.contains("web"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Down: containers, network and (with -v) volume gone.
    ok(&n, &dir, &["down", "-v"], &[]);
    assert!(!exists(&n, &["inspect", "shop-db-1"]));
    assert!(!exists(&n, &["network", "inspect", "shop_default"]));
    assert!(!exists(&n, &["volume", "inspect", "shop_data"]));
}

#[test]
fn a_file_reg_cannot_honour_is_refused_naming_file_line_and_key() {
    let Some(n) = node() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("bad.yaml"),
        "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        constraints: []\n",
    )
    .expect("write");
    let (code, _, err) = compose(&n, dir, &["-f", "bad.yaml", "up", "-d"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("bad.yaml:5") && err.contains("placement"),
        "{err}"
    );
    std::fs::write(
        dir.join("need.yaml"),
        "services:\n  web:\n    image: \"${IMAGE:?set IMAGE}\"\n",
    )
    .expect("write");
    let (code, _, err) = compose(&n, dir, &["-f", "need.yaml", "config"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("set IMAGE"), "{err}");
    // Nothing was made.
    let (_, out, _) = n.reg(&["ps", "-a", "-q"]);
    assert_eq!(out, "");
}

#[test]
fn compose_builds_execs_runs_one_offs_and_reports_ports_and_processes() {
    let Some(n) = node() else { return };
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tools");
    std::fs::create_dir_all(dir.join("app")).expect("dirs");
    std::fs::write(
        dir.join("app/Dockerfile"),
        format!(
            "FROM {IMG}\nARG MSG\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $MSG > /msg\"]\n"
        ),
    )
    .expect("Dockerfile");
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  app:\n    build:\n      context: ./app\n      args:\n        MSG: built-by-compose\n    \
         init: true\n    command: [\"/bin/busybox\", \"sleep\", \"1000\"]\n    ports: [\"127.0.0.1::80\"]\n",
    )
    .expect("compose.yaml");
    let (_, err) = ok(&n, &dir, &["up", "-d", "--build"], &[]);
    assert!(err.contains("app Built"), "{err}");
    let (out, _) = ok(
        &n,
        &dir,
        &["exec", "-T", "app", "/bin/busybox", "cat", "/msg"],
        &[],
    );
    assert_eq!(out, "built-by-compose\n");
    let (out, _) = ok(
        &n,
        &dir,
        &[
            "run",
            "--rm",
            "-T",
            "app",
            "/bin/busybox",
            "echo",
            "one-off",
        ],
        &[],
    );
    assert_eq!(out, "one-off\n");
    let (_, all, _) = n.reg(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(
        !all.contains("-run-"),
        "the one-off container is gone: {all}"
    );
    let (out, _) = ok(&n, &dir, &["port", "app", "80"], &[]);
    assert!(
        out.starts_with("127.0.0.1:") && out.trim().len() > "127.0.0.1:".len(),
        "{out}"
    );
    let (out, _) = ok(&n, &dir, &["top"], &[]);
    assert!(
        out.starts_with("tools-app-1\n") && out.contains("sleep 1000"),
        "{out}"
    );
    let (out, _) = ok(&n, &dir, &["images"], &[]);
    assert!(
        out.contains("tools-app-1") && out.contains("tools-app"),
        "{out}"
    );
    ok(&n, &dir, &["kill"], &[]);
    wait_until("the app to stop", || {
        n.inspect("tools-app-1")["State"]["Running"] == false
    });
    ok(&n, &dir, &["rm", "-f"], &[]);
    assert!(!exists(&n, &["inspect", "tools-app-1"]));
    let image = ["inspect", "--type", "image", "tools-app"];
    assert!(exists(&n, &image), "the built image is there before down");
    let (_, err) = ok(&n, &dir, &["down", "--rmi", "local"], &[]);
    assert!(err.contains("Image tools-app"), "{err}");
    assert!(
        !exists(&n, &image),
        "down --rmi local removed the built image"
    );
}

/// The earliest end of a passing health probe of `v` (an inspect) after `since` (RFC 3339).
fn first_healthy_after(v: &serde_json::Value, since: &str) -> Option<String> {
    v["State"]["Health"]["Log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["ExitCode"] == 0)
        .filter_map(|p| p["End"].as_str())
        .filter(|end| *end > since)
        .min()
        .map(str::to_string)
}

#[test]
fn after_a_crash_of_the_agent_and_its_containers_the_node_restarts_dependents_after_their_dependencies_are_healthy(
) {
    let Some(mut n) = node() else { return };
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("order");
    std::fs::create_dir(&dir).expect("dir");
    // db is healthy 2 s after each start (its /dev/shm is new every run).
    std::fs::write(
        dir.join("compose.yaml"),
        r#"
services:
  db:
    image: node/run:v1
    init: true
    restart: always
    command: ["/bin/busybox", "sh", "-c", "/bin/busybox sleep 2; /bin/busybox touch /dev/shm/ready; exec /bin/busybox sleep 1000"]
    healthcheck:
      test: ["CMD", "/bin/busybox", "test", "-e", "/dev/shm/ready"]
      interval: 1s
      retries: 60
  web:
    image: node/run:v1
    init: true
    restart: always
    command: ["/bin/busybox", "sleep", "1000"]
    depends_on:
      db:
        condition: service_healthy
"#,
    )
    .expect("compose.yaml");
    ok(&n, &dir, &["up", "-d"], &[]);
    let (db, web) = (n.inspect("order-db-1"), n.inspect("order-web-1"));
    let pids: Vec<i64> = [&db, &web]
        .iter()
        .map(|v| v["State"]["Pid"].as_i64().expect("pid"))
        .collect();
    let web_started = web["State"]["StartedAt"]
        .as_str()
        .expect("started")
        .to_string();

    // As a crash or a reboot: the agent dies, then every container of the project.
    n.server.kill9();
    for pid in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    wait_until("the containers to be gone", || {
        pids.iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    });
    n.server = reg_tests::Registry::start_all(n.tmp.path());
    n.wait_for_agent();

    // The node restarts both (restart: always); web only once db is healthy again.
    wait_until("web to run again", || {
        let v = n.inspect("order-web-1");
        v["State"]["Running"] == true && v["State"]["StartedAt"].as_str() != Some(&web_started)
    });
    let db = n.inspect("order-db-1");
    let web = n.inspect("order-web-1");
    let db_started = db["State"]["StartedAt"]
        .as_str()
        .expect("db started")
        .to_string();
    let web_started = web["State"]["StartedAt"]
        .as_str()
        .expect("web started")
        .to_string();
    let healthy = first_healthy_after(&db, &db_started).expect("db healthy in its new run");
    assert!(
        healthy < web_started,
        "db healthy at {healthy} (started {db_started}), web started at {web_started}"
    );
    ok(&n, &dir, &["down"], &[]);
}

#[test]
fn a_project_published_to_the_registry_deploys_from_it_with_its_images_pinned() {
    let Some(n) = node() else { return };
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pub");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  app:\n    image: node/run:v1\n    init: true\n    \
         command: [\"/bin/busybox\", \"sleep\", \"1000\"]\n    environment:\n      MSG: ${MSG:-published}\n",
    )
    .expect("compose.yaml");
    let (out, _) = ok(&n, &dir, &["publish", "node/pub-project:1"], &[]);
    let digest = out.trim().to_string();
    assert!(digest.starts_with("sha256:"), "{out}");
    // The artifact as a registry client sees it.
    let c = reg_tests::client();
    let m: serde_json::Value = c
        .get(n.server.url("/v2/node/pub-project/manifests/1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .and_then(|r| r.json())
        .expect("manifest");
    assert_eq!(m["artifactType"], "application/vnd.docker.compose.project");
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.compose.file+yaml"
    );
    let file = c
        .get(n.server.url(&format!(
            "/v2/node/pub-project/blobs/{}",
            m["layers"][0]["digest"].as_str().expect("digest")
        )))
        .send()
        .and_then(|r| r.text())
        .expect("file");
    assert!(
        file.contains("node/run@sha256:") && file.contains("name: pub"),
        "{file}"
    );
    assert!(file.contains("MSG: published"), "{file}");

    // Deployed from the registry, from a directory with no compose file in it.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("dir");
    ok(
        &n,
        &elsewhere,
        &["-f", "oci://node/pub-project:1", "up", "-d"],
        &[],
    );
    let v = n.inspect("pub-app-1");
    assert_eq!(v["State"]["Running"], true);
    assert!(
        v["Config"]["Image"]
            .as_str()
            .is_some_and(|i| i.contains("@sha256:")),
        "{}",
        v["Config"]["Image"]
    );
    ok(
        &n,
        &elsewhere,
        &["-f", "oci://node/pub-project:1", "down"],
        &[],
    );
    assert!(!exists(&n, &["inspect", "pub-app-1"]));
    // An image is not a project.
    let (code, _, err) = compose(
        &n,
        &elsewhere,
        &["-f", "oci://node/run:v1", "up", "-d"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("is not a compose project"), "{err}");
}

#[test]
fn replicas_answer_to_their_service_name_and_a_one_off_client_finds_them_all() {
    let Some(n) = node() else { return };
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("dns");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::write(
        dir.join("compose.yaml"),
        r#"
services:
  web:
    image: node/run:v1
    init: true
    command: ["/bin/busybox", "sleep", "1000"]
    deploy:
      replicas: 3
  client:
    image: node/run:v1
    command: ["/bin/busybox", "nslookup", "web"]
    deploy:
      replicas: 0
"#,
    )
    .expect("compose.yaml");
    ok(&n, &dir, &["up", "-d"], &[]);
    let mut ips: Vec<String> = (1..=3)
        .map(|i| {
            let v = n.inspect(&format!("dns-web-{i}"));
            v["NetworkSettings"]["Networks"]["dns_default"]["IPAddress"]
                .as_str()
                .expect("ip")
                .to_string()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "{ips:?}");
    let (out, _) = ok(&n, &dir, &["run", "--rm", "-T", "client"], &[]);
    for ip in &ips {
        assert!(out.contains(&format!("Address: {ip}")), "{ip} in {out}");
    }
    ok(&n, &dir, &["down"], &[]);
}

#[test]
fn the_same_file_under_docker_compose_on_dockerd_and_reg_compose_on_reg_gives_the_same_outcome() {
    let Some(n) = node() else { return };
    let Some(dc) = reg_tests::peer("docker-compose") else {
        return;
    };
    if !reg_tests::docker_ready() {
        return;
    }
    let (code, _, err) = n.reg(&["pull", IMG]);
    assert_eq!(code, 0, "{err}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("same");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::write(
        dir.join("docker-compose.yml"),
        r#"
services:
  hello:
    image: ${REGISTRY}/node/run:v1
    command: ["/bin/busybox", "sh", "-c", "echo hello-$$NAME from $$(/bin/busybox hostname)"]
    environment:
      NAME: ${NAME:-compose}
    labels:
      app: same
"#,
    )
    .expect("compose file");
    let registry = n.server.host.clone();
    let env = [("REGISTRY", registry.as_str()), ("NAME", "both")];
    // docker-compose on dockerd (which pulls from reg's registry on loopback).
    let docker = |args: &[&str]| {
        let out = std::process::Command::new(&dc)
            .args(["-p", "samed"])
            .args(args)
            .current_dir(&dir)
            .envs(env)
            .env_remove("DOCKER_HOST")
            .output()
            .expect("docker-compose");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = docker(&["up", "-d"]);
    assert_eq!(code, 0, "docker-compose up: {err}");
    let (code, _, err) = compose(&n, &dir, &["-p", "samer", "up", "-d"], &env);
    assert_eq!(code, 0, "reg compose up: {err}");
    // The one-shot's output (its hostname is its own id on both), its exit code, and the labels
    // tools read, side by side.
    let inspect_docker = |what: &str| -> serde_json::Value {
        let out = std::process::Command::new("docker")
            .args(["inspect", what])
            .output()
            .expect("docker inspect");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")[0].clone()
    };
    wait_until("both containers to exit", || {
        inspect_docker("samed_hello_1")["State"]["Status"] == "exited"
            && n.inspect("samer-hello-1")["State"]["Status"] == "exited"
    });
    let (d, r) = (inspect_docker("samed_hello_1"), n.inspect("samer-hello-1"));
    assert_eq!(d["State"]["ExitCode"], r["State"]["ExitCode"]);
    for label in [
        "com.docker.compose.service",
        "com.docker.compose.container-number",
        "com.docker.compose.oneoff",
        "app",
    ] {
        assert_eq!(
            d["Config"]["Labels"][label], r["Config"]["Labels"][label],
            "{label}"
        );
    }
    let logs_d = std::process::Command::new("docker")
        .args(["logs", "samed_hello_1"])
        .output()
        .expect("docker logs");
    let (code, logs_r, err) = n.reg(&["logs", "samer-hello-1"]);
    assert_eq!(code, 0, "{err}");
    let hostname =
        |v: &serde_json::Value| v["Config"]["Hostname"].as_str().unwrap_or("").to_string();
    assert_eq!(
        String::from_utf8_lossy(&logs_d.stdout),
        format!("hello-both from {}\n", hostname(&d))
    );
    assert_eq!(logs_r, format!("hello-both from {}\n", hostname(&r)));
    let (code, _, err) = docker(&["down"]);
    assert_eq!(code, 0, "{err}");
    let _ = std::process::Command::new("docker")
        .args(["rmi", &format!("{registry}/node/run:v1")])
        .output();
    let (code, _, err) = compose(&n, &dir, &["-p", "samer", "down"], &env);
    assert_eq!(code, 0, "{err}");
}
