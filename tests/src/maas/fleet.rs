//! The machines, subnets and addresses of the MAAS API stand-in, and the
//! clock that moves them. MAAS moves a deployed machine on its own
//! (Deploying until the installation reports, then Deployed or Failed
//! deployment; Releasing until it powers off, then Ready); the stand-in
//! does the same on its own timer: [`Fleet::tick`] runs before every
//! request and advances every machine by the time passed, writing the
//! event log entries MAAS would have written on the way, and the ones a
//! deployed node's node-init would have posted, by the machine's
//! [`Script`] (kept as `add_event_to_node_event_log` keeps them: `start`
//! events as DEBUG "Node status event", `FAIL` as ERROR "Node
//! post-installation failure", described `'node-init' <description>`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Maas;

/// What a machine's deployment and its node-init come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// Deployed; node-init goes through its stages and reports done.
    Succeed,
    /// Deployed; node-init fails at `stage` with `description`.
    FailAt { stage: String, description: String },
    /// The installation fails: MAAS marks the machine Failed deployment,
    /// with curtin's words in its log.
    FailDeployment(String),
    /// Deployed; node-init never reports.
    Silent,
}

/// A machine the stand-in starts with (Ready, commissioned).
#[derive(Debug, Clone)]
pub struct MachineSpec {
    pub hostname: String,
    pub cpu_count: u32,
    pub memory_mib: u64,
    /// One disk, in GB (1000^3 bytes).
    pub disk_gb: u64,
    pub zone: String,
    pub pool: String,
    pub tags: Vec<String>,
    /// Its address on the machines' subnet.
    pub ip: IpAddr,
    /// A static link: MAAS lists the address from the start. Otherwise
    /// (MAAS's default, AUTO) the address is claimed only when the
    /// deployment starts, and a Ready or Allocated machine lists none.
    pub static_ip: bool,
    pub script: Script,
}

impl MachineSpec {
    /// A machine fit for a PCG node: 4 CPUs, 8 GiB, 100 GB.
    pub fn pcg(hostname: &str, ip: &str) -> Self {
        Self {
            hostname: hostname.to_owned(),
            cpu_count: 4,
            memory_mib: 8192,
            disk_gb: 100,
            zone: "default".into(),
            pool: "default".into(),
            tags: Vec::new(),
            ip: ip.parse().expect("an IP address"),
            static_ip: false,
            script: Script::Succeed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ready,
    Allocated,
    Deploying,
    Deployed,
    FailedDeployment,
    Releasing,
}

impl Status {
    /// MAAS's `NODE_STATUS` value and its name.
    pub fn code(self) -> (i64, &'static str) {
        match self {
            Self::Ready => (4, "Ready"),
            Self::Allocated => (10, "Allocated"),
            Self::Deploying => (9, "Deploying"),
            Self::Deployed => (6, "Deployed"),
            Self::FailedDeployment => (11, "Failed deployment"),
            Self::Releasing => (12, "Releasing"),
        }
    }
}

/// One deploy as the stand-in took it.
#[derive(Debug, Clone)]
pub struct Deploy {
    pub osystem: String,
    pub distro_series: String,
    /// The user data, base64-decoded.
    pub user_data: String,
    /// The node-init config the user data writes, as YAML parsed.
    pub config: Value,
    pub comment: String,
}

impl Machine {
    /// Its address, when MAAS has assigned it.
    pub fn ip(&self) -> Option<IpAddr> {
        let claimed = matches!(self.status, Status::Deploying | Status::Deployed | Status::FailedDeployment);
        (self.spec.static_ip || claimed).then_some(self.spec.ip)
    }
}

pub(super) struct Machine {
    pub system_id: String,
    pub spec: MachineSpec,
    pub status: Status,
    pub agent_name: String,
    pub owner: Option<String>,
    /// When the current status started.
    pub since: Instant,
    pub deploys: Vec<Deploy>,
    pub release_comments: Vec<String>,
    /// node-init events of the script not yet written to the log.
    pub pending: Vec<(Duration, &'static str, &'static str, String)>,
}

/// One entry of a machine's event log (MAAS's `Event`).
#[derive(Debug, Clone)]
pub struct Event {
    pub id: u64,
    pub system_id: String,
    pub hostname: String,
    /// 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR.
    pub level: u32,
    pub kind: String,
    pub description: String,
}

pub(super) struct Reservation {
    pub ip: IpAddr,
    pub hostname: String,
}

pub(super) struct Subnet {
    pub id: u64,
    pub cidr: String,
    pub dynamic: Option<(IpAddr, IpAddr)>,
}

pub(super) struct Fleet {
    pub machines: Vec<Machine>,
    pub subnets: Vec<Subnet>,
    pub reservations: Vec<Reservation>,
    /// Addresses something else holds (a device, a BMC): ip, what.
    pub held: Vec<(IpAddr, String)>,
    pub events: Vec<Event>,
    pub next_event: u64,
    /// How long an installation takes, and the gap between two events a
    /// node posts.
    pub deploy_time: Duration,
    pub event_gap: Duration,
    pub release_time: Duration,
    /// Every allocate, reserve and deploy, in order: "allocate abc123"...
    pub log: Vec<String>,
    pub violations: Vec<String>,
    /// Operations (`allocate`, `reserve`) whose answer is held back this
    /// long after MAAS did them: a client killed meanwhile never learns.
    pub late: Vec<(String, Duration)>,
    /// The hold for the answer being made.
    pub delay_next: Option<Duration>,
}

pub const USER: &str = "admin";

impl Fleet {
    pub fn new() -> Self {
        Self {
            machines: Vec::new(),
            subnets: Vec::new(),
            reservations: Vec::new(),
            held: Vec::new(),
            events: Vec::new(),
            next_event: 100,
            deploy_time: Duration::from_millis(800),
            event_gap: Duration::from_millis(100),
            release_time: Duration::from_millis(300),
            log: Vec::new(),
            violations: Vec::new(),
            late: Vec::new(),
            delay_next: None,
        }
    }

    pub fn add(&mut self, spec: MachineSpec) -> String {
        let id = self.machines.len() + 1;
        // MAAS's system ids: six lower-case letters and digits.
        let system_id = format!("m{id:02}x{:02}q", id * 7 % 100);
        self.machines.push(Machine {
            system_id: system_id.clone(),
            spec,
            status: Status::Ready,
            agent_name: String::new(),
            owner: None,
            since: Instant::now(),
            deploys: Vec::new(),
            release_comments: Vec::new(),
            pending: Vec::new(),
        });
        system_id
    }

    pub fn event(&mut self, m: usize, level: u32, kind: &str, description: String) {
        let (system_id, hostname) = (self.machines[m].system_id.clone(), self.machines[m].spec.hostname.clone());
        self.next_event += 1;
        self.events.push(Event { id: self.next_event, system_id, hostname, level, kind: kind.into(), description });
    }

    /// Moves every machine on by the time passed.
    pub fn tick(&mut self) {
        let now = Instant::now();
        for i in 0..self.machines.len() {
            let m = &self.machines[i];
            let elapsed = now.duration_since(m.since);
            match m.status {
                Status::Deploying if elapsed >= self.deploy_time => {
                    let at = m.since + self.deploy_time;
                    if let Script::FailDeployment(why) = m.spec.script.clone() {
                        self.set(i, Status::FailedDeployment, at);
                        self.event(i, 40, "Node installation failure", format!("'curtin' {why}"));
                        self.event(i, 20, "Failed deployment", String::new());
                    } else {
                        self.set(i, Status::Deployed, at);
                        self.event(i, 20, "Deployed", String::new());
                        self.machines[i].pending = script(&self.machines[i].spec.script, self.event_gap);
                    }
                }
                Status::Releasing if elapsed >= self.release_time => {
                    let at = m.since + self.release_time;
                    self.set(i, Status::Ready, at);
                    self.event(i, 20, "Ready", String::new());
                }
                Status::Deployed => {
                    let due: Vec<_> = {
                        let m = &mut self.machines[i];
                        let (due, later) = m.pending.drain(..).partition(|(d, ..)| *d <= elapsed);
                        m.pending = later;
                        due
                    };
                    for (_, level, kind, text) in due {
                        let level = if level == "ERROR" { 40 } else { 10 };
                        self.event(i, level, kind, format!("'node-init' {text}"));
                    }
                }
                _ => {}
            }
        }
    }

    pub fn set(&mut self, i: usize, s: Status, at: Instant) {
        self.machines[i].status = s;
        self.machines[i].since = at;
    }
}

/// The events node-init posts on a deployed machine, as MAAS keeps them,
/// each `gap` after the one before.
fn script(s: &Script, gap: Duration) -> Vec<(Duration, &'static str, &'static str, String)> {
    const STATUS: &str = "Node status event";
    const FAILURE: &str = "Node post-installation failure";
    let mut out = Vec::new();
    let mut push = |level, kind, text: String| {
        let at = gap * (out.len() as u32 + 1);
        out.push((at, level, kind, text));
    };
    if *s == Script::Silent {
        return out;
    }
    push("DEBUG", STATUS, "node-init started in boot 0d9c5f3e-7b1a-4c2e-9f00-5a6b7c8d9e0f".into());
    for stage in ["proxy", "patch", "host", "dns", "kubernetes"] {
        push("DEBUG", STATUS, format!("{stage}: starting (attempt 1)"));
        if let Script::FailAt { stage: failing, description } = s
            && failing == stage
        {
            push("ERROR", FAILURE, format!("{stage}: {description}"));
            push("ERROR", FAILURE, format!("{stage} failed: {description}"));
            return out;
        }
    }
    push("DEBUG", STATUS, "node-init done in 3s: proxy done, patch done, host done, dns done, kubernetes done".into());
    out
}

/// One machine as a test looks at it.
#[derive(Debug, Clone)]
pub struct MachineView {
    pub system_id: String,
    pub hostname: String,
    pub status: String,
    pub agent_name: String,
    pub deploys: Vec<Deploy>,
    pub release_comments: Vec<String>,
}

/// The fleet `node-init up` and `down` drive.
impl Maas {
    /// A Ready machine; returns its system id.
    pub fn add_machine(&self, spec: MachineSpec) -> String {
        self.lock().fleet.add(spec)
    }

    /// A subnet with its dynamic range (MAAS's DHCP hands those out).
    pub fn add_subnet(&self, cidr: &str, dynamic: Option<(&str, &str)>) {
        let mut st = self.lock();
        let id = st.fleet.subnets.len() as u64 + 1;
        let dynamic = dynamic.map(|(a, b)| (a.parse().expect("ip"), b.parse().expect("ip")));
        st.fleet.subnets.push(Subnet { id, cidr: cidr.to_owned(), dynamic });
    }

    /// `ip` is held by something else MAAS knows (a device, another
    /// user's reservation), named `what`.
    pub fn hold_ip(&self, ip: &str, what: &str) {
        self.lock().fleet.held.push((ip.parse().expect("ip"), what.to_owned()));
    }

    /// A complete uploaded image `custom/NAME`, as `node-image upload` leaves it.
    pub fn seed_image(&self, name: &str) {
        super::resources::seed(&mut self.lock().store, name, b"a root filesystem");
    }

    /// How long an installation takes, and the gap between two events a
    /// deployed node posts.
    pub fn timing(&self, deploy: std::time::Duration, event_gap: std::time::Duration) {
        let mut st = self.lock();
        st.fleet.deploy_time = deploy;
        st.fleet.event_gap = event_gap;
    }

    pub fn machines(&self) -> Vec<MachineView> {
        let mut st = self.lock();
        st.fleet.tick();
        st.fleet
            .machines
            .iter()
            .map(|m| MachineView {
                system_id: m.system_id.clone(),
                hostname: m.spec.hostname.clone(),
                status: m.status.code().1.to_owned(),
                agent_name: m.agent_name.clone(),
                deploys: m.deploys.clone(),
                release_comments: m.release_comments.clone(),
            })
            .collect()
    }

    /// Every allocate, deploy, reserve and release the fleet took, in
    /// order: "allocate m01x07q", "reserve 10.11.12.100"...
    pub fn operations(&self) -> Vec<String> {
        self.lock().fleet.log.clone()
    }

    /// The addresses reserved, with their hostnames.
    pub fn reservations(&self) -> Vec<(String, String)> {
        self.lock().fleet.reservations.iter().map(|r| (r.ip.to_string(), r.hostname.clone())).collect()
    }

    /// MAAS does operation `op` (`allocate`, `reserve`) at once but answers
    /// only after `d`; `Duration::ZERO` answers at once again.
    pub fn answer_late(&self, op: &str, d: std::time::Duration) {
        let mut st = self.lock();
        st.fleet.late.retain(|(o, _)| o != op);
        if !d.is_zero() {
            st.fleet.late.push((op.to_owned(), d));
        }
    }

    /// What the stand-in refused that MAAS itself would have let through.
    pub fn fleet_violations(&self) -> Vec<String> {
        self.lock().fleet.violations.clone()
    }

    /// Someone else has machine `system_id` now (released behind the
    /// cluster's back and allocated to another user and agent).
    pub fn take_over(&self, system_id: &str) {
        let mut st = self.lock();
        let m = st.fleet.machines.iter_mut().find(|m| m.system_id == system_id).expect("a machine");
        m.status = Status::Allocated;
        m.owner = Some("bob".into());
        m.agent_name = "juju-model-7".into();
        m.since = Instant::now();
    }
}
