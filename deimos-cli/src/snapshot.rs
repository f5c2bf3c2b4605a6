//! `snapshot save|status|restore`: backups of a running cluster and new clusters from them.
//!
//! A snapshot file is the stream a member serves on `GET /v2/snapshot` (see
//! `deimos_store::recovery`): magic, format version, index, term and membership first, the
//! records, then a trailer with the record count and a checksum. Every command reads a file
//! whole through the same checks before trusting it, so a corrupt or truncated file is refused
//! (exit status 1) and never half-restored.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use deimos_store::recovery::{self, BackupSummary, RecoveryError};

use crate::cli::SnapshotCommand;
use crate::client::{CliError, Client};
use crate::output::Output;

/// How long a download may go without a byte before it is abandoned (at least `--timeout`).
const STALL: Duration = Duration::from_secs(30);

pub async fn run(client: &mut Client, cmd: SnapshotCommand, out: Output) -> Result<(), CliError> {
    match cmd {
        SnapshotCommand::Save { file } => {
            let s = save(client, &file).await?;
            print_summary(&file, &s, out, "saved");
            Ok(())
        }
        SnapshotCommand::Status { file } => {
            let s = blocking(move || status(&file).map(|s| (file, s))).await?;
            print_summary(&s.0, &s.1, out, "status");
            Ok(())
        }
        SnapshotCommand::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
        } => {
            let req = RestoreRequest {
                file,
                data_dir,
                name,
                initial_cluster,
                token: initial_cluster_token,
                advertise: initial_advertise_peer_urls,
            };
            let done = blocking(move || restore(&req).map(|d| (req, d))).await?;
            print_restored(&done.0, &done.1, out);
            Ok(())
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CliError> + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CliError::File(format!("internal error: {e}")))?
}

fn file_err(path: &Path, what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::File(format!("{what} {}: {e}", path.display()))
}

fn recovery_err(path: &Path, e: RecoveryError) -> CliError {
    match e {
        RecoveryError::Invalid(why) => CliError::File(format!(
            "{} is not a usable snapshot (corrupt or truncated): {why}",
            path.display()
        )),
        other => file_err(path, "snapshot", other),
    }
}

/// Check a snapshot file whole.
pub fn status(path: &Path) -> Result<BackupSummary, CliError> {
    let f = std::fs::File::open(path).map_err(|e| file_err(path, "cannot open", e))?;
    recovery::inspect(std::io::BufReader::new(f)).map_err(|e| recovery_err(path, e))
}

/// The file `backup` writes in its backup directory.
pub const BACKUP_FILE: &str = "deimos.snapshot";

pub async fn backup_command(
    data_dir: PathBuf,
    backup_dir: PathBuf,
    out: Output,
) -> Result<(), CliError> {
    let (file, s) = blocking(move || backup(&data_dir, &backup_dir)).await?;
    print_summary(&file, &s, out, "saved");
    Ok(())
}

/// etcdctl v2's `backup`, offline: stream the applied state of a stopped member's store into
/// `backup_dir/deimos.snapshot` (through `.part`, checked whole, then renamed, as `save` does).
/// redb locks its file, so a member still running is refused rather than read mid-write.
pub fn backup(data_dir: &Path, backup_dir: &Path) -> Result<(PathBuf, BackupSummary), CliError> {
    use deimos_store::persist::{RedbStorage, DB_FILE};
    if !data_dir.join(DB_FILE).is_file() {
        return Err(CliError::File(format!(
            "no Deimos store in {} (expected {DB_FILE})",
            data_dir.display()
        )));
    }
    let storage = RedbStorage::open(data_dir).map_err(|e| {
        CliError::File(format!(
            "cannot open the store in {}: {e} (if its member is running, stop it first, or \
             use `deimosctl snapshot save` against the running cluster)",
            data_dir.display()
        ))
    })?;
    std::fs::create_dir_all(backup_dir).map_err(|e| file_err(backup_dir, "cannot create", e))?;
    let file = backup_dir.join(BACKUP_FILE);
    let part = part_path(&file);
    let written = (|| {
        let encoder = storage
            .snapshot_encoder(256 << 10)
            .map_err(|e| file_err(data_dir, "cannot read the store in", e))?;
        let f = std::fs::File::create(&part).map_err(|e| file_err(&part, "cannot create", e))?;
        let mut w = std::io::BufWriter::new(f);
        for chunk in encoder {
            let chunk = chunk.map_err(|e| file_err(data_dir, "cannot read the store in", e))?;
            w.write_all(&chunk)
                .map_err(|e| file_err(&part, "cannot write", e))?;
        }
        let f = w
            .into_inner()
            .map_err(|e| file_err(&part, "cannot write", e.error()))?;
        f.sync_all()
            .map_err(|e| file_err(&part, "cannot sync", e))?;
        status(&part)
    })();
    drop(storage);
    match written {
        Ok(summary) => {
            std::fs::rename(&part, &file).map_err(|e| file_err(&file, "cannot rename into", e))?;
            sync_parent(&file);
            Ok((file, summary))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

fn part_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_os_string();
    p.push(".part");
    PathBuf::from(p)
}

/// Download into `FILE.part`, make it durable, check it whole, then rename it to `FILE`: a
/// file under the final name is always a complete snapshot.
async fn save(client: &mut Client, file: &Path) -> Result<BackupSummary, CliError> {
    let part = part_path(file);
    let result = download(client, &part).await;
    let checked = match result {
        Ok(()) => {
            let p = part.clone();
            blocking(move || status(&p)).await
        }
        Err(e) => Err(e),
    };
    match checked {
        Ok(summary) => {
            std::fs::rename(&part, file).map_err(|e| file_err(file, "cannot rename into", e))?;
            sync_parent(file);
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

async fn download(client: &mut Client, part: &Path) -> Result<(), CliError> {
    let stall = client.timeout().max(STALL);
    let resp = client.get_stream("/v2/snapshot").await?;
    let index = header_u64(&resp, "x-deimos-snapshot-index");
    let mut body = resp.into_body();
    let f = std::fs::File::create(part).map_err(|e| file_err(part, "cannot create", e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let pb = progress(index);
    let started = Instant::now();
    let mut bytes = 0u64;
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => {
                pb.abandon();
                return Err(CliError::Unreachable(format!(
                    "snapshot download stalled for {stall:?} after {bytes} bytes"
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                pb.abandon();
                return Err(CliError::Unreachable(format!(
                    "snapshot download broke after {bytes} bytes: {e}"
                )));
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            w.write_all(&data)
                .map_err(|e| file_err(part, "cannot write", e))?;
            bytes += data.len() as u64;
            pb.set_position(bytes);
        }
    }
    let f = w
        .into_inner()
        .map_err(|e| file_err(part, "cannot write", e.error()))?;
    f.sync_all().map_err(|e| file_err(part, "cannot sync", e))?;
    pb.finish_and_clear();
    if started.elapsed() > Duration::from_secs(2) {
        eprintln!(
            "downloaded {bytes} bytes in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn header_u64(resp: &hyper::Response<hyper::body::Incoming>, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Bytes received and rate on stderr, drawn only when stderr is a terminal.
fn progress(index: Option<u64>) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {elapsed_precise} {bytes} ({bytes_per_sec}) {msg}")
    {
        pb.set_style(style);
    }
    if let Some(i) = index {
        pb.set_message(format!("snapshot at index {i}"));
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Make a rename durable (best effort: not every filesystem allows syncing a directory).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
}

pub struct RestoreRequest {
    pub file: PathBuf,
    pub data_dir: PathBuf,
    pub name: String,
    pub initial_cluster: String,
    pub token: String,
    pub advertise: Vec<String>,
}

pub struct Restored {
    pub summary: BackupSummary,
    pub member_id: u64,
    pub cluster_id: u64,
    pub members: Vec<deimos_store::machine::Member>,
}

/// Seed `data_dir` for the named member of the new cluster. The directory is built under a
/// temporary name beside it and renamed into place only once the whole snapshot was checked
/// and installed, so a failed restore leaves nothing a member could start from.
pub fn restore(req: &RestoreRequest) -> Result<Restored, CliError> {
    let members = recovery::parse_members(&req.initial_cluster)
        .map_err(|e| CliError::Usage(format!("--initial-cluster: {e}")))?;
    let me = members.iter().find(|m| m.name == req.name).ok_or_else(|| {
        CliError::Usage(format!(
            "--initial-cluster has no member named {:?} (--name)",
            req.name
        ))
    })?;
    if !req.advertise.is_empty() {
        let norm = |v: &[String]| {
            let mut v: Vec<String> = v
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect();
            v.sort();
            v
        };
        if norm(&req.advertise) != norm(&me.peer_urls) {
            return Err(CliError::Usage(format!(
                "--initial-advertise-peer-urls {} differ from {}'s URLs in --initial-cluster ({})",
                req.advertise.join(","),
                me.name,
                me.peer_urls.join(",")
            )));
        }
    }
    let dir = &req.data_dir;
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(CliError::Usage(format!(
                "--data-dir {} exists and is not empty; restore into a new directory",
                dir.display()
            )));
        }
    }
    let mut tmp = dir.as_os_str().to_os_string();
    tmp.push(".restoring");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_dir_all(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_err(&tmp, "cannot remove the leftover", e)),
    }
    let cluster_id = recovery::cluster_id(&members, &req.token);
    let file = std::fs::File::open(&req.file).map_err(|e| file_err(&req.file, "cannot open", e))?;
    let seeded = recovery::restore(
        std::io::BufReader::new(file),
        &tmp,
        &members,
        me.id,
        cluster_id,
    );
    let summary = match seeded {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(recovery_err(&req.file, e));
        }
    };
    // An empty directory given as --data-dir is replaced.
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(|e| file_err(dir, "cannot replace", e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| file_err(dir, "cannot rename into", e))?;
    sync_parent(dir);
    Ok(Restored {
        summary,
        member_id: me.id,
        cluster_id,
        members,
    })
}

fn summary_json(file: &Path, s: &BackupSummary) -> serde_json::Value {
    serde_json::json!({
        "file": file.display().to_string(),
        "hash": format!("{:016x}", s.checksum),
        "index": s.meta.index,
        "term": s.meta.term,
        "etcdIndex": s.store_index,
        "keys": s.keys,
        "records": s.records,
        "size": s.bytes,
        "voters": s.meta.conf.voters.iter().map(|v| format!("{v:x}")).collect::<Vec<_>>(),
    })
}

fn print_summary(file: &Path, s: &BackupSummary, out: Output, what: &str) {
    if out == Output::Json {
        println!("{}", summary_json(file, s));
        return;
    }
    if what == "saved" {
        println!("Snapshot saved at {}", file.display());
    }
    println!("hash:       {:016x}", s.checksum);
    println!("index:      {}", s.meta.index);
    println!("term:       {}", s.meta.term);
    println!("etcd index: {}", s.store_index);
    println!("keys:       {}", s.keys);
    println!("size:       {} bytes", s.bytes);
}

fn print_restored(req: &RestoreRequest, r: &Restored, out: Output) {
    let members: Vec<String> = r
        .members
        .iter()
        .map(|m| format!("{}={:x}", m.name, m.id))
        .collect();
    if out == Output::Json {
        let mut v = summary_json(&req.file, &r.summary);
        v["dataDir"] = req.data_dir.display().to_string().into();
        v["memberId"] = format!("{:x}", r.member_id).into();
        v["clusterId"] = format!("{:x}", r.cluster_id).into();
        v["members"] = members.into();
        println!("{v}");
        return;
    }
    println!(
        "Restored {} keys (index {}, term {}, hash {:016x}) into {} as member {} ({:x}) of new cluster {:x}: {}",
        r.summary.keys,
        r.summary.meta.index,
        r.summary.meta.term,
        r.summary.checksum,
        req.data_dir.display(),
        req.name,
        r.member_id,
        r.cluster_id,
        members.join(", ")
    );
}
