//! nginx as a reverse proxy in front of a benchmark's upstream, at the same path as ours, with
//! the settings a reverse proxy for a dev server needs: upstream keep-alive, HTTP/1.1, WebSocket
//! upgrades, no buffering. One worker per core, as nginx's `auto` gives.

// Unsafe code here only signals the nginx it started.
#![allow(unsafe_code)]

use std::time::Duration;

/// How many connections the workers take; the default is what `benches/proxy.rs` measures with.
#[derive(Clone, Copy)]
pub struct Capacity {
    /// `worker_connections`: client and upstream connections together, per worker.
    pub worker_connections: u64,
    /// `worker_rlimit_nofile`, when set: the workers' own limit on open files.
    pub rlimit_nofile: Option<u64>,
    /// `listen … reuseport`: a listening socket per worker, so the kernel spreads connections
    /// evenly over them (without it one busy worker may accept most of a burst).
    pub reuseport: bool,
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity { worker_connections: 4096, rlimit_nofile: None, reuseport: false }
    }
}

impl Capacity {
    /// Room for `conns` proxied connections (two descriptors each) over the workers, within the
    /// open-files limit `nofile` each worker may have.
    pub fn for_connections(conns: u64, nofile: u64) -> Capacity {
        let want = 2 * conns + 64;
        Capacity { worker_connections: want.min(nofile), rlimit_nofile: Some(nofile), reuseport: true }
    }
}

pub struct Nginx {
    pub master: std::process::Child,
    pub port: u16,
    pub version: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx proxying `prefix/` to `127.0.0.1:<up_port>/`, or `None` when it is not
    /// installed (or does not start).
    pub fn start(up_port: u16, prefix: &str, capacity: Capacity) -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())?;
        let version = std::process::Command::new(bin).arg("-v").output().ok()?;
        let version = String::from_utf8_lossy(&version.stderr).trim().rsplit('/').next().unwrap_or("").to_string();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.path().display();
        let Capacity { worker_connections, rlimit_nofile, reuseport } = capacity;
        let rlimit = rlimit_nofile.map(|n| format!("worker_rlimit_nofile {n};\n")).unwrap_or_default();
        let reuseport = if reuseport { " reuseport" } else { "" };
        let conf = format!(
            "worker_processes auto;\n{rlimit}daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections {worker_connections}; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 100000000;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; keepalive_requests 100000000; }}\n\
               map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
               server {{\n    listen 127.0.0.1:{port}{reuseport};\n\
                 location {prefix}/ {{\n      proxy_pass http://up/;\n      proxy_http_version 1.1;\n\
                   proxy_set_header Host $host;\n      proxy_set_header Upgrade $http_upgrade;\n\
                   proxy_set_header Connection $connection_upgrade;\n      proxy_buffering off;\n\
                   proxy_read_timeout 1h;\n    }}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let master = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut nginx = Nginx { master, port, version, dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && !nginx.workers().is_empty() {
                return Some(nginx);
            }
            if nginx.master.try_wait().ok().flatten().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    /// The worker processes (the master only supervises them).
    pub fn workers(&self) -> Vec<u32> {
        super::procs::children(self.master.id())
    }

    /// The master and its workers: what nginx as a whole holds.
    pub fn processes(&self) -> Vec<u32> {
        let mut all = vec![self.master.id()];
        all.extend(self.workers());
        all
    }

    /// What nginx wrote to its error log (why connections failed, say).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master takes its workers down with it.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.master.id() as i32, libc::SIGTERM) };
        let _ = self.master.wait();
    }
}
