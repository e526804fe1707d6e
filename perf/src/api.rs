//! The gateway's HTTP API as the load tool uses it (admin key, waits out
//! 429s) and the counters it reads from `/metrics`.

use std::time::Duration;

use serde_json::Value;

pub struct Api<'a> {
    pub base: &'a str,
    pub key: Option<&'a str>,
}

impl Api<'_> {
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        loop {
            let mut r = ureq::request(method, &format!("{}{path}", self.base))
                .timeout(Duration::from_secs(10));
            if let Some(k) = self.key {
                r = r.set("authorization", &format!("Bearer {k}"));
            }
            let res = match &body {
                Some(b) => r.send_json(b.clone()),
                None => r.call(),
            };
            match res {
                Ok(resp) => return Ok(resp.into_json().unwrap_or(Value::Null)),
                // Session creation is rate limited per client: wait as told.
                Err(ureq::Error::Status(429, resp)) => {
                    let secs: u64 = resp
                        .header("retry-after")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1);
                    std::thread::sleep(Duration::from_secs(secs));
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(format!(
                        "{method} {path}: {code} {}",
                        resp.into_string().unwrap_or_default()
                    ))
                }
                Err(e) => return Err(format!("{method} {path}: {e}")),
            }
        }
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
        loop {
            let r = ureq::post(&format!("{}{path}", self.base))
                .timeout(Duration::from_secs(10))
                .set("content-type", "application/sdp");
            match r.send_string(offer) {
                Ok(resp) => {
                    let location = resp
                        .header("location")
                        .ok_or_else(|| format!("POST {path}: no Location"))?
                        .to_string();
                    let answer = resp.into_string().map_err(|e| e.to_string())?;
                    return Ok((location, answer));
                }
                Err(ureq::Error::Status(429, resp)) => {
                    let secs: u64 = resp
                        .header("retry-after")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1);
                    std::thread::sleep(Duration::from_secs(secs));
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(format!(
                        "POST {path}: {code} {}",
                        resp.into_string().unwrap_or_default()
                    ))
                }
                Err(e) => return Err(format!("POST {path}: {e}")),
            }
        }
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
