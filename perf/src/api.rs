//! The gateway's HTTP API as the load tool uses it (admin key, waits out
//! 429s) and the counters it reads from `/metrics`.

use std::time::Duration;

use serde_json::Value;

use crate::Args;

pub struct Api<'a> {
    pub base: &'a str,
    pub key: Option<&'a str>,
}

/// Sends a request until it is not answered 429 (session creation is rate
/// limited per client: wait as told), and names the request in errors.
fn with_retry(
    what: &str,
    send: impl Fn() -> Result<ureq::Response, Box<ureq::Error>>,
) -> Result<ureq::Response, String> {
    loop {
        match send().map_err(|e| *e) {
            Ok(resp) => return Ok(resp),
            Err(ureq::Error::Status(429, resp)) => {
                let secs: u64 = resp
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                std::thread::sleep(Duration::from_secs(secs));
            }
            Err(ureq::Error::Status(code, resp)) => {
                return Err(format!(
                    "{what}: {code} {}",
                    resp.into_string().unwrap_or_default()
                ))
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

impl<'a> Api<'a> {
    /// The API and admin key the command line names.
    pub fn new(args: &'a Args) -> Api<'a> {
        Api {
            base: &args.api,
            key: args.admin_key.as_deref(),
        }
    }
}

impl Api<'_> {
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let resp = with_retry(&format!("{method} {path}"), || {
            let mut r = ureq::request(method, &format!("{}{path}", self.base))
                .timeout(Duration::from_secs(10));
            if let Some(k) = self.key {
                r = r.set("authorization", &format!("Bearer {k}"));
            }
            match &body {
                Some(b) => r.send_json(b.clone()),
                None => r.call(),
            }
            .map_err(Box::new)
        })?;
        Ok(resp.into_json().unwrap_or(Value::Null))
    }

    /// The dataplane's process id (its CPU and memory are what is measured).
    pub fn dataplane_pid(&self) -> Result<u32, String> {
        self.call("GET", "/healthz", None)?["dataplane"]["pid"]
            .as_u64()
            .map(|p| p as u32)
            .ok_or_else(|| "no dataplane pid in /healthz".into())
    }
}

impl Api<'_> {
    /// The dataplane's UDP sends and the datagrams they carried, summed
    /// over shards, from `/metrics`.
    pub fn udp_sends(&self) -> Option<(u64, u64)> {
        let mut r = ureq::get(&format!("{}/metrics", self.base)).timeout(Duration::from_secs(5));
        if let Some(k) = self.key {
            r = r.set("authorization", &format!("Bearer {k}"));
        }
        let text = r.call().ok()?.into_string().ok()?;
        let sum = |name: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        Some((sum("mgw_udp_sends_total"), sum("mgw_udp_datagrams_total")))
    }
}

impl Api<'_> {
    /// Posts an SDP offer (WHIP or WHEP) and returns the session's
    /// `Location` and the answer; waits out 429s like [`Api::call`].
    pub fn post_sdp(&self, path: &str, offer: &str) -> Result<(String, String), String> {
        let resp = with_retry(&format!("POST {path}"), || {
            ureq::post(&format!("{}{path}", self.base))
                .timeout(Duration::from_secs(10))
                .set("content-type", "application/sdp")
                .send_string(offer)
                .map_err(Box::new)
        })?;
        let location = resp
            .header("location")
            .ok_or_else(|| format!("POST {path}: no Location"))?
            .to_string();
        let answer = resp.into_string().map_err(|e| e.to_string())?;
        Ok((location, answer))
    }

    /// Ends a WHIP/WHEP session by its `Location` (a path on the API).
    pub fn delete_location(&self, location: &str) -> Result<(), String> {
        ureq::delete(&format!("{}{location}", self.base))
            .timeout(Duration::from_secs(10))
            .call()
            .map(|_| ())
            .map_err(|e| format!("DELETE {location}: {e}"))
    }
}
