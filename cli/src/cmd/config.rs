//! `reg config show`: the effective configuration after file, environment and defaults.

use std::path::Path;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML.
    Show,
}

pub fn run(file: Option<&Path>, command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Show => {
            let cfg = reg_config::Config::load(file)?;
            print!("{}", cfg.to_toml());
            Ok(())
        }
    }
}
