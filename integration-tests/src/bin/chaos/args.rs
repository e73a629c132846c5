//! The command line: `--rounds N`, `--seed S`, `--dir D`, `--keep`.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::rng::Rng;

pub(crate) struct Args {
    pub(crate) rounds: u32,
    pub(crate) seed: u64,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) keep: bool,
}

fn parse_u64(s: &str) -> anyhow::Result<u64> {
    let v = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16)?,
        None => s.parse()?,
    };
    Ok(v)
}

pub(crate) fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        rounds: 3,
        seed: random_seed(),
        dir: None,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--rounds" => {
                args.rounds = value("--rounds")?.parse().context("--rounds")?;
            }
            "--seed" => args.seed = parse_u64(&value("--seed")?).context("--seed")?,
            "--dir" => args.dir = Some(PathBuf::from(value("--dir")?)),
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!("usage: chaos [--rounds N] [--seed S] [--dir D] [--keep]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (usage: chaos [--rounds N] [--seed S] [--dir D] [--keep])"),
        }
    }
    Ok(args)
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut r = Rng(nanos ^ (u64::from(std::process::id()) << 32));
    r.next_u64() >> 16
}
