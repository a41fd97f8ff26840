//! `reg completion SHELL` and `reg man`: shell completions (`clap_complete`) and man pages
//! (`clap_mangen`), both generated from the same command tree that parses the arguments, so
//! they never disagree with it.

use std::path::Path;

use anyhow::Context;

/// Prints the completion script of `shell` for `cmd` on standard output (a reader that goes
/// away, as `| head` does, is no error).
pub fn completion(shell: clap_complete::Shell, cmd: &mut clap::Command) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, cmd, "reg", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the completion script")
        }
        _ => Ok(()),
    }
}

/// Writes `reg.1` and one page per subcommand (`reg-admin-quota.1`, …) into `dir`; without a
/// directory, prints `reg.1`.
pub fn man(cmd: clap::Command, dir: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .context("writing the man page")?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = 0;
    let mut stack = vec![(cmd.clone().name("reg"), "reg".to_string())];
    while let Some((c, name)) = stack.pop() {
        for sub in c.get_subcommands().filter(|s| !s.is_hide_set()) {
            let sub_name = format!("{name}-{}", sub.get_name());
            stack.push((sub.clone().name(sub_name.clone()), sub_name));
        }
        let path = dir.join(format!("{name}.1"));
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_mangen::Man::new(c)
            .render(&mut file)
            .with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    println!(
        "{written} man pages in {} (try: man -l {}/reg.1)",
        dir.display(),
        dir.display()
    );
    Ok(())
}
