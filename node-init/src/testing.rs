//! The unit tests' world, written once: a temp root with a boot id, a
//! recording runner, the node the stages act for, and golden files under
//! `tests/fixtures/` (rewritten with `NODE_INIT_UPDATE_GOLDEN=1`).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::config::Config;
use crate::node::Node;
use crate::pipeline::{self, End, Options};
use crate::root::Root;
use crate::runner::Recording;
use crate::stages::{Context, Outcome, Stage};
use crate::state::{self, StageRecord, State};

pub const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
pub const RHEL: &str = "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n";

pub struct World {
    _dir: tempfile::TempDir,
    pub root: Root,
    pub runner: Recording,
    /// The node the stages act for; its boot id is read from the root at
    /// each run, so [`World::boot`] is a reboot.
    pub node: Node,
}

impl World {
    /// An empty root in boot `boot-1`, for node1.maas.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = Root::new(dir.path()).expect("root");
        let node = Node { fqdn: Ok("node1.maas".into()), ..Node::default() };
        let w = Self { _dir: dir, root, runner: Recording::new(), node };
        w.boot("boot-1");
        w
    }

    /// A root of the given distribution.
    pub fn with_os(os_release: &str) -> Self {
        let w = Self::new();
        w.write("/etc/os-release", os_release);
        w
    }

    pub fn boot(&self, id: &str) {
        self.root.write(state::BOOT_ID_PATH, format!("{id}\n").as_bytes(), 0o444).expect("boot id");
    }

    pub fn write(&self, path: &str, content: &str) {
        self.root.write(path, content.as_bytes(), 0o644).expect("write");
    }

    pub fn node_now(&self) -> Node {
        Node { boot_id: state::boot_id(&self.root).expect("boot id"), ..self.node.clone() }
    }

    /// Runs the pipeline over `stages`. `paused` time makes backoff waits
    /// free, but must not be used with real network I/O.
    pub fn run(&self, stages: &[&dyn Stage], config: &Config, paused: bool) -> End {
        self.run_with(stages, config, &Options::default(), paused, false).0
    }

    /// The pipeline with options, in a dry run or not; the end and the plan.
    pub fn run_with(
        &self,
        stages: &[&dyn Stage],
        config: &Config,
        opts: &Options,
        paused: bool,
        dry_run: bool,
    ) -> (End, Vec<String>) {
        let node = self.node_now();
        let cx = Context::new(&self.root, &node, config, &self.runner, dry_run);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(paused).build().expect("rt");
        let end = rt.block_on(pipeline::run(stages, &cx, opts)).expect("the pipeline ran");
        (end, cx.plan())
    }

    /// One stage's own run, outside the pipeline.
    pub fn stage(&self, stage: &dyn Stage, config: &Config) -> anyhow::Result<Outcome> {
        let node = self.node_now();
        let cx = Context::new(&self.root, &node, config, &self.runner, false);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(stage.run(&cx))
    }

    pub fn state(&self) -> State {
        State::load(&self.root).expect("state")
    }

    pub fn record(&self, stage: &str) -> StageRecord {
        self.state().stages[stage].clone()
    }

    pub fn read(&self, path: &str) -> String {
        self.root.read_string_opt(path).expect("read").unwrap_or_else(|| panic!("{path} missing"))
    }

    pub fn mode(&self, path: &str) -> u32 {
        std::fs::metadata(self.root.path(path)).expect("stat").permissions().mode() & 0o7777
    }

    /// Every file under the root, with its bytes, for before/after checks.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).expect("read_dir") {
                let p = e.expect("entry").path();
                if p.is_dir() { walk(&p, out) } else { out.push((p.clone(), std::fs::read(&p).expect("read"))) }
            }
        }
        let mut out = Vec::new();
        walk(self.root.base(), &mut out);
        out.sort();
        out
    }
}

/// Compares `actual` with `tests/fixtures/<dir>/<name>`.
pub fn golden(dir: &str, name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(dir).join(name);
    if std::env::var_os("NODE_INIT_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, actual).expect("write golden");
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (NODE_INIT_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, want, "{name} differs from its golden file");
}
