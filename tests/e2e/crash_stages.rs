//! Killed at any instant of a whole first boot, a rerun converges: the
//! worker of `src/crash.rs` proxies with a CA, patches with real apt and a
//! slow postinst while its images are pulled beside the patch through a
//! real containerd (killed with it, as a power cut would), and joins with
//! a slow kubeadm double. Each run is
//! SIGKILLed, its whole process group as a power cut would, at a moment
//! read from a reference run's log (`src/kill.rs`); the rerun must end with
//! the reference's files (`src/overlay.rs` says which it touched) and stage
//! statuses, and `kubeadm reset` must never reach a node whose kubelet.conf
//! a join laid down.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use node_init_tests::apt::{self, PKG};
use node_init_tests::crash::{World, command, dpkg_status, resets};
use node_init_tests::kill::{self, Kill, Moment, Timeline};
use node_init_tests::overlay::{Entry, Layered, entries};
use node_init_tests::state;

/// Where the kills go: this many spread over each stage's span in the
/// reference run (`dns` is skipped under `--root`: a few milliseconds),
/// then [`targeted`] ones. Each costs a killed run and a rerun, 2 to 10 s
/// here.
const PER_STAGE: [(&str, u32); 5] = [("proxy", 5), ("patch", 3), ("host", 1), ("dns", 1), ("kubernetes", 7)];

/// One kill inside `apt-get update`, six over apt's dist-upgrade (dpkg
/// unpacking with the slow preinst, then the slow postinst), one as the kubernetes stage starts,
/// before kubeadm, and one right after kubeadm returns, before node-init
/// records it.
fn targeted(t: &Timeline) -> Vec<Moment> {
    let mut m = t.moments_during("running command=apt-get", 1);
    m.extend(t.moments_during("dist-upgrade", 6));
    m.push(t.right_after("stage{stage=\"kubernetes\"}: node_init::pipeline: starting"));
    m.push(t.right_after("kubeadm.yaml` succeeded"));
    // Two while containerd fetches the images beside the patch.
    let pulling = t.right_after(PULLING);
    m.push(pulling);
    m.push(Moment { delay: std::time::Duration::from_millis(40), ..pulling });
    m
}

/// What node-init logs as a pull through containerd starts, and ends.
const PULLING: &str = "images: pulling through containerd";
const PULLED: &str = "images: pulled ";

/// Paths whose content legitimately differs between two runs that both
/// ended well; their presence is still compared.
fn timed(p: &Path) -> bool {
    // node-init's own record: start and end times, and the node's random key.
    ["var/lib/node-init/state.json", "var/lib/node-init/done", "var/lib/node-init/fingerprint.key"]
        .contains(&&*p.to_string_lossy())
}

/// Paths that are not compared at all, and why.
fn ignored(p: &Path) -> bool {
    let s = p.to_string_lossy();
    // Logs: a killed run logs what it did before the kill.
    s.starts_with("var/log/")
        // A killed tool's temp files; systemd-tmpfiles empties /tmp at boot.
        || s.starts_with("tmp/")
        // containerd's content and state: asked through its CRI instead.
        || s.starts_with("run/containerd/")
        // apt's binary caches, rebuilt from the lists whenever stale.
        || s.ends_with("pkgcache.bin")
        // dpkg's and debconf's backups of their databases as they were
        // before their last write: an interrupted run adds writes.
        || ((s.starts_with("var/lib/dpkg/") || s.starts_with("var/cache/debconf/")) && s.ends_with("-old"))
}

fn stage_statuses(root: &Path) -> Vec<(String, String)> {
    let st = state(root);
    let stages = st["stages"].as_object().expect("stages");
    stages.iter().map(|(k, r)| (k.clone(), r["status"].as_str().expect("status").to_owned())).collect()
}

/// What the reference run left: its touched paths' entries, its statuses.
struct Want {
    entries: BTreeMap<PathBuf, Entry>,
    statuses: Vec<(String, String)>,
}

/// How `node` differs from the reference, over every path either touched
/// (a temp file left is one), besides what legitimately differs.
fn differences(want: &Want, template: &Path, node: &Layered) -> Vec<String> {
    let touched = node.touched();
    let mut paths: BTreeSet<PathBuf> = want.entries.keys().cloned().collect();
    paths.extend(touched.iter().cloned());
    let mut out = Vec::new();
    for p in paths.iter().filter(|p| !ignored(p)) {
        let w = want.entries.get(p).cloned().unwrap_or_else(|| Entry::read(&template.join(p)));
        let g = Entry::read(&node.path().join(p));
        let same = if timed(p) { std::mem::discriminant(&w) == std::mem::discriminant(&g) } else { w == g };
        if !same {
            out.push(format!("{}: want {}, got {}", p.display(), w.show(), g.show()));
        }
    }
    let statuses = stage_statuses(&node.path());
    if statuses != want.statuses {
        out.push(format!("stage statuses: want {:?}, got {statuses:?}", want.statuses));
    }
    let dpkg = dpkg_status(&node.path());
    if dpkg != "install ok installed" {
        out.push(format!("{PKG}: {dpkg}"));
    }
    out
}

#[derive(Default)]
struct Counts {
    kills: u32,
    landed: u32,
    per_stage: BTreeMap<String, u32>,
    dpkg_left_interrupted: u32,
    /// dpkg's record of the test package after each kill that left it so.
    dpkg_states: BTreeMap<String, u32>,
    repaired: u32,
    repaired_from_journal: u32,
    trust_rebuilt: u32,
    before_kubeadm: u32,
    in_kubeadm_before_bootstrap: u32,
    in_kubeadm_after_bootstrap: u32,
    after_kubeadm: u32,
    /// Kills that came while containerd was fetching an image for node-init.
    in_pull: u32,
    converged: u32,
    resets: usize,
    member_resets: usize,
}

impl Counts {
    /// Where the kill landed, from what ran and what it left in `root`.
    fn killed(&mut self, k: &Kill, root: &Path) {
        self.kills += 1;
        if !k.landed {
            return;
        }
        self.landed += 1;
        let count = |needle: &str| k.seen.iter().filter(|l| l.contains(needle)).count();
        if count(PULLING) > count(PULLED) {
            self.in_pull += 1;
        }
        *self.per_stage.entry(k.stage.clone().unwrap_or_else(|| "(none yet)".into())).or_default() += 1;
        let dpkg = dpkg_status(root);
        if dpkg != "install ok installed" {
            self.dpkg_left_interrupted += 1;
            *self.dpkg_states.entry(dpkg).or_default() += 1;
        }
        if k.stage.as_deref() != Some("kubernetes") {
            return;
        }
        match (k.hit("kubeadm"), root.join("etc/kubernetes/kubelet.conf").exists()) {
            (true, false) => self.in_kubeadm_before_bootstrap += 1,
            (true, true) => self.in_kubeadm_after_bootstrap += 1,
            (false, true) => self.after_kubeadm += 1,
            (false, false) => self.before_kubeadm += 1,
        }
    }

    /// What the rerun did to recover, from its log and kubeadm's record.
    fn reran(&mut self, rerun: &Timeline, root: &Path) {
        let logged = |needle: &str| u32::from(rerun.lines.iter().any(|(_, l)| l.contains(needle)));
        self.repaired += logged("repairing with `dpkg --configure -a`");
        self.repaired_from_journal += logged("/var/lib/dpkg/updates holds unapplied entries");
        self.trust_rebuilt += logged("update-ca-certificates --fresh");
        let (all, members) = resets(root);
        self.resets += all;
        self.member_resets += members;
    }

    fn report(&self) -> String {
        format!(
            "{} kills, {} landed while node-init ran, per stage {:?}; {} left dpkg mid-upgrade {:?}, {} reruns repaired \
             it with `dpkg --configure -a` ({} found by dpkg's journal); {} rebuilt the trust store after a killed \
             update-ca-certificates; kubernetes: {} before kubeadm, {} in kubeadm before the TLS bootstrap, {} in \
             kubeadm after it, {} after kubeadm returned; {} while containerd fetched an image; {} reruns \
             converged; kubeadm resets: {}, of members: {}",
            self.kills,
            self.landed,
            self.per_stage,
            self.dpkg_left_interrupted,
            self.dpkg_states,
            self.repaired,
            self.repaired_from_journal,
            self.trust_rebuilt,
            self.before_kubeadm,
            self.in_kubeadm_before_bootstrap,
            self.in_kubeadm_after_bootstrap,
            self.after_kubeadm,
            self.in_pull,
            self.converged,
            self.resets,
            self.member_resets,
        )
    }

    fn check(&self) {
        let r = self.report();
        let landed = |stage: &str| self.per_stage.get(stage).copied().unwrap_or(0);
        assert_eq!(self.member_resets, 0, "a member was reset: {r}");
        assert_eq!(self.converged, self.kills, "{r}");
        assert!(self.landed + 1 >= self.kills, "kills fell after the run: {r}");
        assert!(landed("proxy") >= 4 && landed("patch") >= 6 && landed("kubernetes") >= 6, "{r}");
        assert!(self.dpkg_left_interrupted >= 2 && self.repaired >= 1, "too few kills inside dpkg: {r}");
        assert!(self.trust_rebuilt >= 1, "no kill cut update-ca-certificates off: {r}");
        let kubeadm = [self.before_kubeadm, self.in_kubeadm_before_bootstrap, self.in_kubeadm_after_bootstrap];
        assert!(kubeadm.iter().all(|n| *n >= 1) && self.after_kubeadm >= 1, "a side of kubeadm was missed: {r}");
        assert!(self.in_pull >= 1, "no kill came while containerd fetched an image: {r}");
    }
}

/// The commands a kill caught, by program, for the progress line.
fn programs(k: &Kill) -> Vec<&str> {
    let mut p: Vec<&str> = k
        .inside
        .iter()
        .filter_map(|c| c.split(' ').find(|a| !a.is_empty() && !a.ends_with("sh") && !a.starts_with('-')))
        .collect();
    p.dedup();
    p
}

#[test]
fn sigkill_anywhere_in_proxy_patch_and_join_then_rerun_converges() {
    let started = Instant::now();
    let world = World::new();
    let t = world.template.path();
    let reference = Layered::new(t);
    let containerd = world.containerd(&reference.path());
    let (timeline, status) = kill::run_to_end(&mut command(&reference.path()));
    assert_eq!(status.code(), Some(0), "the uninterrupted run failed:\n{}", timeline.text());
    assert_eq!(apt::installed(&reference.path()), "2");
    assert_eq!(world.missing(&containerd), Vec::<&str>::new(), "{}", containerd.log());
    drop(containerd);
    let want =
        Want { entries: entries(&reference.path(), &reference.touched()), statuses: stage_statuses(&reference.path()) };
    drop(reference);
    eprintln!("reference run: {:.1?}, {} log lines", timeline.took, timeline.lines.len());

    let mut moments: Vec<_> = PER_STAGE.iter().flat_map(|(stage, n)| timeline.moments_in(stage, *n)).collect();
    moments.extend(targeted(&timeline));
    let mut c = Counts::default();
    let mut failures = Vec::new();
    for (i, m) in moments.into_iter().enumerate() {
        let node = Layered::new(t);
        let root = node.path();
        let containerd = world.containerd(&root);
        let k = kill::kill_at(&mut command(&root), &root, m);
        // The power cut takes containerd too; it starts again at boot.
        // node-init's /run is left as a kill without a reboot leaves it:
        // the rerun clears it.
        drop(containerd);
        c.killed(&k, &root);
        let containerd = world.containerd(&root);
        let (rerun, status) = kill::run_to_end(&mut command(&root));
        eprintln!(
            "trial {i:>2}: {:<10} {:?}; the rerun took {:.1?}",
            k.stage.as_deref().unwrap_or("-"),
            programs(&k),
            rerun.took
        );
        let mut diff = if status.success() { differences(&want, t, &node) } else { vec!["the rerun failed".into()] };
        let missing = world.missing(&containerd);
        if !missing.is_empty() {
            diff.push(format!("containerd lacks {missing:?} after the rerun"));
        }
        if !diff.is_empty() {
            failures.push(format!(
                "trial {i} ({m:?}, {k:?}):\n{}\nthe rerun's log:\n{}",
                diff.join("\n"),
                rerun.text()
            ));
            continue;
        }
        c.reran(&rerun, &root);
        c.converged += 1;
    }
    eprintln!("{}; {:.0?} in all", c.report(), started.elapsed());
    assert!(failures.is_empty(), "{} reruns did not converge:\n{}", failures.len(), failures.join("\n\n"));
    c.check();
}
