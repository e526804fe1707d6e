//! nginx-rtmp, the RTMP scenario's baseline: Debian's `nginx-light` with
//! `libnginx-mod-rtmp`, run as one process (no master, one worker, as our
//! one shard) on a loopback port with a configuration written for the run.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";
const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

pub struct Nginx {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl Nginx {
    pub fn start() -> Result<Nginx, String> {
        for f in [NGINX, MODULE] {
            if !std::path::Path::new(f).exists() {
                return Err(format!(
                    "{f} is missing: the RTMP baseline needs Debian's nginx-light and \
                     libnginx-mod-rtmp (apt-get install nginx-light libnginx-mod-rtmp)"
                ));
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = std::env::temp_dir().join(format!("loadgen-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // Same chunk size as the gateway's (4096) and no extras: live relay
        // only, as the gateway does with its GOP cache on.
        let conf = format!(
            "load_module {MODULE};\n\
             daemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log stderr warn;\npid {dir}/nginx.pid;\n\
             events {{ worker_connections 8192; }}\n\
             rtmp {{ server {{ listen {addr}; chunk_size 4096;\n\
             \x20 application live {{ live on; }} }} }}\n",
            dir = dir.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting nginx: {e}"))?;
        let mut n = Nginx { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("nginx-rtmp did not listen within 5 s".into());
            }
            if let Ok(Some(st)) = n.child.try_wait() {
                return Err(format!("nginx-rtmp exited at start: {st}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(n)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
