//! Seccomp filters for containers, compiled to BPF with `seccompiler` (rust-vmm).
//!
//! The default profile refuses (EPERM) what docker's default profile refuses to a container
//! with docker's default capabilities — kernel keyrings, modules, kexec/reboot, clock setting,
//! mount and the new mount API, namespaces (`unshare`, `setns`, `clone` with `CLONE_NEW*`),
//! `bpf`, `perf_event_open`, `userfaultfd`, `io_uring`, cross-process memory access, NUMA
//! policy, obsolete calls — and lets each group back in when the container holds the
//! capability docker's profile ties it to (`--cap-add SYS_ADMIN` allows `mount`, …).
//! `clone3` answers ENOSYS (so libcs fall back to `clone`, whose flags can be checked), as
//! docker does. Written as a deny-list (docker's is an allow-list), so a syscall newer than
//! this list is allowed; see ARCHITECTURE.md.
//!
//! `--security-opt seccomp=PROFILE.json` takes docker's profile format: `defaultAction`,
//! `defaultErrnoRet`, `syscalls[]` with `names`, `action`, `errnoRet`, `args` (`index`,
//! `value`, `valueTwo`, `op`) and `includes`/`excludes` by `caps` and `arches`. Syscall names
//! unknown on this architecture are skipped, as libseccomp does.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Per syscall name, its alternative argument conditions (`None`: unconditional).
type Alternatives = BTreeMap<String, Option<Vec<Vec<Arg>>>>;

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Trap,
    Log,
    Trace(u32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`
    MaskedEq(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arg {
    pub index: u8,
    pub op: Op,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: Action,
    /// All must hold (AND); several rules for one name are alternatives (OR).
    #[serde(default)]
    pub args: Vec<Arg>,
    /// Only when the container holds all of these capabilities…
    #[serde(default)]
    pub if_caps: Vec<String>,
    /// …and none of these.
    #[serde(default)]
    pub unless_caps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub default_action: Action,
    pub rules: Vec<Rule>,
}

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// `CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET`, one by one.
const CLONE_NEW_FLAGS: [u64; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// The `personality(2)` values docker's default profile allows.
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

fn deny(names: &[&str], unless: &[&str]) -> Rule {
    Rule {
        names: names.iter().map(|s| s.to_string()).collect(),
        action: Action::Errno(EPERM),
        args: Vec::new(),
        if_caps: Vec::new(),
        unless_caps: unless.iter().map(|s| format!("CAP_{s}")).collect(),
    }
}

impl Profile {
    pub fn default_profile() -> Profile {
        let mut rules = vec![
            deny(&["add_key", "keyctl", "request_key"], &[]),
            deny(
                &[
                    "nfsservctl",
                    "sysfs",
                    "_sysctl",
                    "uselib",
                    "userfaultfd",
                    "ustat",
                    "vm86",
                    "vm86old",
                    "get_kernel_syms",
                    "query_module",
                    "create_module",
                    "io_uring_setup",
                    "io_uring_enter",
                    "io_uring_register",
                ],
                &[],
            ),
            deny(&["acct"], &["SYS_PACCT"]),
            deny(
                &["init_module", "finit_module", "delete_module"],
                &["SYS_MODULE"],
            ),
            deny(&["kexec_load", "kexec_file_load", "reboot"], &["SYS_BOOT"]),
            deny(
                &["clock_adjtime", "clock_settime", "settimeofday", "stime"],
                &["SYS_TIME"],
            ),
            deny(&["ioperm", "iopl"], &["SYS_RAWIO"]),
            deny(
                &[
                    "kcmp",
                    "process_vm_readv",
                    "process_vm_writev",
                    "pidfd_getfd",
                ],
                &["SYS_PTRACE"],
            ),
            deny(
                &["get_mempolicy", "mbind", "set_mempolicy", "move_pages"],
                &["SYS_NICE"],
            ),
            deny(&["syslog"], &["SYSLOG"]),
            deny(&["open_by_handle_at"], &["DAC_READ_SEARCH"]),
            deny(&["bpf"], &["SYS_ADMIN", "BPF"]),
            deny(&["perf_event_open"], &["SYS_ADMIN", "PERFMON"]),
            deny(
                &[
                    "mount",
                    "umount",
                    "umount2",
                    "pivot_root",
                    "setns",
                    "unshare",
                    "name_to_handle_at",
                    "lookup_dcookie",
                    "quotactl",
                    "quotactl_fd",
                    "fanotify_init",
                    "swapon",
                    "swapoff",
                    "open_tree",
                    "move_mount",
                    "fsopen",
                    "fsconfig",
                    "fsmount",
                    "fspick",
                    "mount_setattr",
                ],
                &["SYS_ADMIN"],
            ),
        ];
        // clone with a namespace flag: one rule per flag (the rules of a name are ORed).
        for flag in CLONE_NEW_FLAGS {
            rules.push(Rule {
                args: vec![Arg {
                    index: 0,
                    op: Op::MaskedEq(flag),
                    value: flag,
                }],
                ..deny(&["clone"], &["SYS_ADMIN"])
            });
        }
        rules.push(Rule {
            action: Action::Errno(ENOSYS),
            ..deny(&["clone3"], &["SYS_ADMIN"])
        });
        // personality(2): only the personas docker's profile allows (PER_LINUX, PER_LINUX32,
        // either with UNAME26, and the 0xffffffff query); ADDR_NO_RANDOMIZE and the rest of
        // the flags are refused whatever the capabilities.
        rules.push(Rule {
            args: PERSONAS
                .iter()
                .map(|v| Arg {
                    index: 0,
                    op: Op::Ne,
                    value: *v,
                })
                .collect(),
            ..deny(&["personality"], &[])
        });
        Profile {
            default_action: Action::Allow,
            rules,
        }
    }

    /// Reads a docker-format profile.
    pub fn from_docker_json(json: &str) -> Result<Profile, SeccompError> {
        let p: DockerProfile = serde_json::from_str(json).map_err(SeccompError::Json)?;
        let default_errno = p.default_errno_ret.unwrap_or(EPERM);
        let default_action = docker_action(&p.default_action, None, default_errno)?;
        let arch = docker_arch();
        let mut rules = Vec::new();
        for s in p.syscalls {
            let arches = &s.includes.arches;
            if !arches.is_empty() && !arches.iter().any(|a| a == arch) {
                continue;
            }
            if s.excludes.arches.iter().any(|a| a == arch) {
                continue;
            }
            let mut names = s.names;
            names.extend(s.name);
            let args = s
                .args
                .iter()
                .map(|a| {
                    let op = match a.op.as_str() {
                        "SCMP_CMP_EQ" => Op::Eq,
                        "SCMP_CMP_NE" => Op::Ne,
                        "SCMP_CMP_LT" => Op::Lt,
                        "SCMP_CMP_LE" => Op::Le,
                        "SCMP_CMP_GT" => Op::Gt,
                        "SCMP_CMP_GE" => Op::Ge,
                        "SCMP_CMP_MASKED_EQ" => Op::MaskedEq(a.value),
                        other => return Err(SeccompError::UnknownOp(other.to_string())),
                    };
                    let value = if matches!(op, Op::MaskedEq(_)) {
                        a.value_two
                    } else {
                        a.value
                    };
                    Ok(Arg {
                        index: a.index,
                        op,
                        value,
                    })
                })
                .collect::<Result<Vec<_>, SeccompError>>()?;
            rules.push(Rule {
                names,
                action: docker_action(&s.action, s.errno_ret, default_errno)?,
                args,
                if_caps: s.includes.caps.iter().map(|c| cap_name(c)).collect(),
                unless_caps: s.excludes.caps.iter().map(|c| cap_name(c)).collect(),
            });
        }
        Ok(Profile {
            default_action,
            rules,
        })
    }

    /// Compiles the filters for a container holding `caps`: one BPF program per action
    /// (seccomp runs them all and the strictest answer wins), in installation order.
    pub fn compile(&self, caps: &[String]) -> Result<Vec<seccompiler::BpfProgram>, SeccompError> {
        let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))?;
        // action → name → alternatives (None = unconditional).
        let mut groups: BTreeMap<Action, Alternatives> = BTreeMap::new();
        for r in &self.rules {
            let holds = |c: &String| caps.iter().any(|have| have == c);
            if !r.if_caps.iter().all(holds) {
                continue;
            }
            if !r.unless_caps.is_empty() && r.unless_caps.iter().any(holds) {
                continue;
            }
            if r.action == self.default_action {
                continue;
            }
            for n in &r.names {
                let slot = groups
                    .entry(r.action.clone())
                    .or_default()
                    .entry(n.clone())
                    .or_insert_with(|| Some(Vec::new()));
                match (slot.as_mut(), r.args.is_empty()) {
                    (_, true) => *slot = None,
                    (Some(alts), false) => alts.push(r.args.clone()),
                    (None, false) => {}
                }
            }
        }
        let mut programs = Vec::new();
        // An allow-list first (default deny, match allow), then the other actions.
        let order: Vec<&Action> = groups
            .keys()
            .filter(|a| **a == Action::Allow)
            .chain(groups.keys().filter(|a| **a != Action::Allow))
            .collect();
        if !groups.contains_key(&Action::Allow) && self.default_action != Action::Allow {
            // Nothing allowed at all: one filter that answers the default to everything.
            programs.push(compile_one(
                &BTreeMap::new(),
                &self.default_action,
                &Action::Allow,
                arch,
            )?);
        }
        for action in order {
            let names = &groups[action];
            let (mismatch, matched) = if *action == Action::Allow {
                (&self.default_action, action)
            } else {
                (&Action::Allow, action)
            };
            programs.push(compile_one(names, mismatch, matched, arch)?);
        }
        Ok(programs)
    }
}

fn action_json(a: &Action) -> serde_json::Value {
    match a {
        Action::Allow => "allow".into(),
        Action::Errno(n) => serde_json::json!({ "errno": n }),
        Action::KillThread => "kill_thread".into(),
        Action::KillProcess => "kill_process".into(),
        Action::Trap => "trap".into(),
        Action::Log => "log".into(),
        Action::Trace(n) => serde_json::json!({ "trace": n }),
    }
}

fn arg_json(a: &Arg) -> serde_json::Value {
    let op = match a.op {
        Op::Eq => "eq".into(),
        Op::Ne => "ne".into(),
        Op::Lt => "lt".into(),
        Op::Le => "le".into(),
        Op::Gt => "gt".into(),
        Op::Ge => "ge".into(),
        Op::MaskedEq(m) => serde_json::json!({ "masked_eq": m }),
    };
    serde_json::json!({ "index": a.index, "type": "qword", "op": op, "val": a.value })
}

/// Names seccompiler knows on this architecture (asked once per name, remembered).
fn known(name: &str, arch: seccompiler::TargetArch) -> bool {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<HashMap<String, bool>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(k) = cache.lock().ok().and_then(|c| c.get(name).copied()) {
        return k;
    }
    let probe = serde_json::json!({ "p": {
        "mismatch_action": "allow", "match_action": "trap",
        "filter": [{ "syscall": name }],
    }});
    let k = seccompiler::compile_from_json(probe.to_string().as_bytes(), arch).is_ok();
    if let Ok(mut c) = cache.lock() {
        c.insert(name.to_string(), k);
    }
    k
}

fn compile_one(
    names: &Alternatives,
    mismatch: &Action,
    matched: &Action,
    arch: seccompiler::TargetArch,
) -> Result<seccompiler::BpfProgram, SeccompError> {
    let mut filter = Vec::new();
    for (name, alts) in names {
        if !known(name, arch) {
            continue;
        }
        match alts {
            None => filter.push(serde_json::json!({ "syscall": name })),
            Some(alts) => {
                for args in alts {
                    let args: Vec<_> = args.iter().map(arg_json).collect();
                    filter.push(serde_json::json!({ "syscall": name, "args": args }));
                }
            }
        }
    }
    let json = serde_json::json!({ "f": {
        "mismatch_action": action_json(mismatch),
        "match_action": action_json(matched),
        "filter": filter,
    }});
    // seccompiler's Rust API takes syscall numbers; only its JSON frontend knows their names
    // (its table is private), so the filter goes through JSON rather than a table of ours.
    let mut map = seccompiler::compile_from_json(json.to_string().as_bytes(), arch)
        .map_err(SeccompError::Compile)?;
    map.remove("f").ok_or(SeccompError::NoProgram)
}

/// The file beside a bundle holding its filters compiled ahead (by the agent, once per profile
/// and capability set): compiling in every container start cost ~8 ms.
pub const CACHE_FILE: &str = "seccomp.bpf";

/// What the compiled programs depend on: the profile and the capability set.
pub fn cache_key(p: &Profile, caps: &[String]) -> String {
    let mut caps = caps.to_vec();
    caps.sort();
    let json = serde_json::to_vec(&(p, caps)).unwrap_or_default();
    reg_registry::Digest::sha256_of(&json).hex().to_string()
}

/// Compiles, remembering the result for the life of this process.
pub fn compile_cached(
    p: &Profile,
    caps: &[String],
) -> Result<std::sync::Arc<Vec<seccompiler::BpfProgram>>, SeccompError> {
    type Memo = std::sync::Mutex<HashMap<String, std::sync::Arc<Vec<seccompiler::BpfProgram>>>>;
    static MEMO: std::sync::OnceLock<Memo> = std::sync::OnceLock::new();
    let key = cache_key(p, caps);
    let memo = MEMO.get_or_init(Default::default);
    if let Some(hit) = memo.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(hit);
    }
    let programs = std::sync::Arc::new(p.compile(caps)?);
    if let Ok(mut m) = memo.lock() {
        m.insert(key, programs.clone());
    }
    Ok(programs)
}

/// Writes `programs` for `key` into `dir` (temp + rename): `key\n`, then per program its
/// instruction count and 8-byte instructions, little-endian.
pub fn write_cache(
    dir: &std::path::Path,
    key: &str,
    programs: &[seccompiler::BpfProgram],
) -> std::io::Result<()> {
    let mut out = format!("{key}\n").into_bytes();
    out.extend((programs.len() as u32).to_le_bytes());
    for p in programs {
        out.extend((p.len() as u32).to_le_bytes());
        for i in p {
            out.extend(i.code.to_le_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend(i.k.to_le_bytes());
        }
    }
    let tmp = dir.join(format!(".{CACHE_FILE}.tmp"));
    std::fs::write(&tmp, out)?;
    std::fs::rename(tmp, dir.join(CACHE_FILE))
}

/// The programs cached in `dir` if they were compiled for `key`.
pub fn read_cache(dir: &std::path::Path, key: &str) -> Option<Vec<seccompiler::BpfProgram>> {
    let raw = std::fs::read(dir.join(CACHE_FILE)).ok()?;
    let nl = raw.iter().position(|&b| b == b'\n')?;
    if &raw[..nl] != key.as_bytes() {
        return None;
    }
    let mut rest = &raw[nl + 1..];
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, b) = (rest.get(..n)?, rest.get(n..)?);
        rest = b;
        Some(a)
    };
    let u32_of = |b: &[u8]| b.try_into().ok().map(u32::from_le_bytes);
    let count = u32_of(take(4)?)?;
    let mut programs = Vec::new();
    for _ in 0..count {
        let len = u32_of(take(4)?)?;
        let mut p = Vec::with_capacity(len as usize);
        for _ in 0..len {
            let b = take(8)?;
            p.push(seccompiler::sock_filter {
                code: u16::from_le_bytes([b[0], b[1]]),
                jt: b[2],
                jf: b[3],
                k: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            });
        }
        programs.push(p);
    }
    rest.is_empty().then_some(programs)
}

/// Installs the programs (after `no_new_privs`); the calling thread only.
pub fn install(programs: &[seccompiler::BpfProgram]) -> Result<(), SeccompError> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(SeccompError::Install)?;
    }
    Ok(())
}

/// A seccomp profile that cannot be read, compiled or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile is not valid docker-format JSON: {0}")]
    Json(serde_json::Error),
    #[error("seccomp profile: unknown op {0:?}")]
    UnknownOp(String),
    #[error("seccomp profile: action {0:?} is not supported (use ALLOW, ERRNO, KILL, KILL_PROCESS, TRAP, LOG or TRACE)")]
    UnknownAction(String),
    #[error("seccomp on {0}: this architecture is not supported")]
    Arch(&'static str),
    #[error("compiling the seccomp filter: {0}")]
    Compile(seccompiler::Error),
    #[error("compiling the seccomp filter: no program")]
    NoProgram,
    #[error("installing seccomp filter: {0}")]
    Install(seccompiler::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<DockerSyscall>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerSyscall {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<DockerArg>,
    #[serde(default)]
    includes: DockerFilter,
    #[serde(default)]
    excludes: DockerFilter,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerArg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Deserialize, Default)]
struct DockerFilter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

fn cap_name(c: &str) -> String {
    let u = c.to_ascii_uppercase();
    if u.starts_with("CAP_") {
        u
    } else {
        format!("CAP_{u}")
    }
}

fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn docker_action(a: &str, errno: Option<u32>, default_errno: u32) -> Result<Action, SeccompError> {
    Ok(match a {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => Action::Errno(errno.unwrap_or(default_errno)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_TRACE" => Action::Trace(errno.unwrap_or(0)),
        other => return Err(SeccompError::UnknownAction(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_caps() -> Vec<String> {
        crate::runtime::spec::SecuritySpec::default().caps
    }

    /// The default profile, installed on a thread of its own: `personality(2)` answers EPERM
    /// to ADDR_NO_RANDOMIZE and other flags, and works for the personas docker allows.
    #[test]
    #[allow(unsafe_code)]
    fn personality_is_limited_to_dockers_personas() {
        let programs = Profile::default_profile()
            .compile(&default_caps())
            .expect("compiles");
        let results = std::thread::spawn(move || {
            nix::sys::prctl::set_no_new_privs().expect("no_new_privs");
            install(&programs).expect("install");
            [0x0004_0000u64, 0x0040_0000, 0xffff_ffff, 0x0].map(|p| {
                // SAFETY: personality(2) takes a plain integer and changes only this
                // thread's execution domain (the thread ends right after).
                let r = unsafe { nix::libc::personality(p as nix::libc::c_ulong) };
                (r, nix::errno::Errno::last())
            })
        })
        .join()
        .expect("thread");
        let eperm = nix::errno::Errno::EPERM;
        assert_eq!(
            (results[0].0, results[0].1),
            (-1, eperm),
            "ADDR_NO_RANDOMIZE"
        );
        assert_eq!(
            (results[1].0, results[1].1),
            (-1, eperm),
            "READ_IMPLIES_EXEC"
        );
        assert_ne!(results[2].0, -1, "the query");
        assert_ne!(results[3].0, -1, "PER_LINUX");
    }

    #[test]
    fn default_profile_compiles_with_and_without_sys_admin() {
        let p = Profile::default_profile();
        let plain = p.compile(&default_caps()).expect("compiles");
        assert_eq!(plain.len(), 2, "EPERM and ENOSYS filters");
        let mut admin = default_caps();
        admin.push("CAP_SYS_ADMIN".into());
        let with_admin = p.compile(&admin).expect("compiles");
        assert!(
            with_admin.iter().map(Vec::len).sum::<usize>()
                < plain.iter().map(Vec::len).sum::<usize>()
        );
    }

    #[test]
    fn docker_profile_with_caps_arches_and_unknown_names() {
        let json = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [
                {"names": ["read", "write", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["sparc_only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["sparc"]}}
            ]
        }"#;
        let p = Profile::from_docker_json(json).expect("parses");
        assert_eq!(p.default_action, Action::Errno(1));
        assert_eq!(p.rules.len(), 4, "the sparc rule is not for this arch");
        assert_eq!(
            p.rules[1].args,
            vec![Arg {
                index: 0,
                op: Op::MaskedEq(2114060288),
                value: 0
            }]
        );
        let progs = p.compile(&default_caps()).expect("compiles");
        assert_eq!(progs.len(), 2);
    }

    #[test]
    fn compiled_filters_round_trip_through_the_cache_file() {
        let t = tempfile::tempdir().expect("tempdir");
        let (p, caps) = (Profile::default_profile(), default_caps());
        let key = cache_key(&p, &caps);
        let programs = compile_cached(&p, &caps).expect("compile");
        write_cache(t.path(), &key, &programs).expect("write");
        assert_eq!(read_cache(t.path(), &key).as_ref(), Some(&*programs));
        assert_eq!(
            read_cache(t.path(), "another key"),
            None,
            "a stale cache is ignored"
        );
        std::fs::write(t.path().join(CACHE_FILE), format!("{key}\n\x01")).expect("write");
        assert_eq!(read_cache(t.path(), &key), None, "a torn file is ignored");
    }

    #[test]
    fn bad_profiles_are_refused_with_a_reason() {
        let e = Profile::from_docker_json("{").expect_err("invalid");
        assert!(matches!(e, SeccompError::Json(_)), "{e}");
        assert!(e.to_string().contains("not valid"), "{e}");
        let e = Profile::from_docker_json(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#)
            .expect_err("unsupported");
        assert!(
            matches!(&e, SeccompError::UnknownAction(a) if a == "SCMP_ACT_NOTIFY"),
            "{e}"
        );
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}
