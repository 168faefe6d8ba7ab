//! `server keys create|list|revoke --data-dir DIR`: keys for scripts, on a
//! stopped server's data dir or a running one's (the running server sees
//! the change within [`super::RELOAD_EVERY`]).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::*;

/// `server keys`.
#[derive(Debug, Parser)]
#[command(name = "server keys", about = "Virtual keys of a data dir")]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Makes a key and prints it as JSON, its secret included (shown once).
    Create {
        /// The data dir of the server (default ./data).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// The team it spends for.
        #[arg(long)]
        team: Option<String>,
        /// Most USD per period.
        #[arg(long)]
        budget_usd: Option<f64>,
        /// The budget's period: day, week or month (UTC).
        #[arg(long, value_parser = ["day", "week", "month"])]
        period: Option<String>,
        /// Most requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Most tokens per minute.
        #[arg(long)]
        tpm: Option<u64>,
        /// The modes it may use, comma-separated (default all).
        #[arg(long, value_delimiter = ',')]
        modes: Vec<String>,
        /// When it stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Lists the keys as JSON (never a secret).
    List {
        /// The data dir of the server (default ./data).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Revokes a key.
    Revoke {
        /// The data dir of the server (default ./data).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The key's id.
        id: String,
    },
}

/// `server keys ...`: runs it and gives its exit code; `None` for any
/// other command line.
pub fn run(args: &[std::ffi::OsString]) -> Option<i32> {
    if args.get(1)?.to_str()? != "keys" {
        return None;
    }
    let argv = std::iter::once("server keys".into()).chain(args[2..].iter().cloned());
    let parsed = KeysArgs::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    Some(match run_cli(parsed) {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("error: {msg}");
            2
        }
    })
}

fn run_cli(args: KeysArgs) -> Result<(), String> {
    let open = |dir: &PathBuf| crate::store::open_for_keys(dir).map_err(|e| e.to_string());
    match args.command {
        KeysCommand::Create {
            data_dir,
            name,
            team,
            budget_usd,
            period,
            rpm,
            tpm,
            modes,
            expires_at,
        } => {
            let modes = if modes.is_empty() {
                None
            } else {
                Some(
                    modes
                        .iter()
                        .map(|m| {
                            Mode::from_name(m).ok_or_else(|| {
                                format!(
                                    "--modes: {m:?} is not simple, two-stage, council or benchmark"
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                )
            };
            let new = NewKey {
                name,
                team,
                budget_usd,
                period: period.as_deref().and_then(Period::from_name),
                rpm,
                tpm,
                modes,
                expires_at,
            };
            let mut conn = open(&data_dir)?;
            let secret = new_secret().map_err(|e| e.to_string())?;
            let record = record_of(new, &secret).map_err(|e| e.to_string())?;
            store::insert_key(&mut conn, &record).map_err(|e| e.to_string())?;
            let keys = offline(&conn)?;
            let key = keys
                .into_iter()
                .find(|k| k.id == record.id)
                .ok_or("the key vanished")?;
            print(&wire::CreatedKey {
                id: key.id.clone(),
                secret,
                key,
            });
        }
        KeysCommand::List { data_dir } => {
            let conn = open(&data_dir)?;
            print(&wire::KeyList {
                keys: offline(&conn)?,
            });
        }
        KeysCommand::Revoke { data_dir, id } => {
            let mut conn = open(&data_dir)?;
            let at = Utc::now().timestamp_millis();
            match store::revoke_key(&mut conn, &id, at).map_err(|e| e.to_string())? {
                Some(_) => {
                    let key = offline(&conn)?.into_iter().find(|k| k.id == id);
                    print(&key);
                }
                None => return Err(format!("no key {id} that is not revoked already")),
            }
        }
    }
    Ok(())
}

/// The keys of `conn` as the admin API shows them (spend from the ledger;
/// the last minute's use is only known to a running server).
fn offline(conn: &rusqlite::Connection) -> Result<Vec<KeyView>, String> {
    let now = Utc::now();
    let records = store::load_keys(conn).map_err(|e| e.to_string())?;
    let keys = Keys::new(None, Policy::default()).map_err(|e| e.to_string())?;
    records
        .into_iter()
        .map(|record| {
            let start = record.period.start(now).timestamp_millis();
            let s = store::load_spend(conn, &record.id, start).map_err(|e| e.to_string())?;
            let entry = Entry {
                record,
                meter: Arc::new(Mutex::new(Meter {
                    period_start: s.period_start,
                    spent_usd: s.usd,
                    requests: s.requests,
                    tokens: s.tokens,
                    ..Meter::default()
                })),
            };
            Ok(keys.view(&entry, now))
        })
        .collect()
}

fn print<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
