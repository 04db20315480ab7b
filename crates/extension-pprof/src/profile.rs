//! The `perftools.profiles.Profile` message (profile.proto) that `go tool
//! pprof` reads, built from a `pprof` crate report.

use std::collections::HashMap;

use prost::Message;

/// `perftools.profiles.Profile`.
#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
}

/// `ValueType`.
#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// `Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
}

/// `Location`.
#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

/// `Line`.
#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// `Function`.
#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

#[derive(Default)]
struct Builder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64), u64>,
    locations: HashMap<Vec<(u64, i64)>, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(i) = self.strings.get(s) {
            return *i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (self.string(name), self.string(file));
        if let Some(id) = self.functions.get(&key) {
            return *id;
        }
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(Function {
            id,
            name: key.0,
            system_name: key.0,
            filename: key.1,
        });
        self.functions.insert(key, id);
        id
    }

    fn location(&mut self, address: u64, lines: Vec<(u64, i64)>) -> u64 {
        if let Some(id) = self.locations.get(&lines) {
            return *id;
        }
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            address,
            line: lines
                .iter()
                .map(|(f, l)| Line {
                    function_id: *f,
                    line: *l,
                })
                .collect(),
        });
        self.locations.insert(lines, id);
        id
    }
}

/// Converts a report into a CPU profile: two sample values per stack,
/// `samples/count` and `cpu/nanoseconds`.
pub fn from_report(report: &pprof::Report) -> Profile {
    let mut b = Builder::default();
    b.string("");
    let frequency = report.timing.frequency.max(1) as i64;
    let period = 1_000_000_000 / frequency;
    let samples = b.string("samples");
    let count = b.string("count");
    let cpu = b.string("cpu");
    let nanos = b.string("nanoseconds");
    b.profile.sample_type = vec![
        ValueType {
            r#type: samples,
            unit: count,
        },
        ValueType {
            r#type: cpu,
            unit: nanos,
        },
    ];
    b.profile.period_type = Some(ValueType {
        r#type: cpu,
        unit: nanos,
    });
    b.profile.period = period;
    b.profile.time_nanos = report
        .timing
        .start_time
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    b.profile.duration_nanos = report.timing.duration.as_nanos() as i64;
    for (frames, n) in &report.data {
        let mut ids = Vec::with_capacity(frames.frames.len());
        for frame in &frames.frames {
            let mut lines = Vec::with_capacity(frame.len());
            let mut address = 0;
            for symbol in frame {
                let file = symbol
                    .filename
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let f = b.function(&symbol.name(), &file);
                lines.push((f, i64::from(symbol.lineno.unwrap_or(0))));
                address = symbol.addr.map(|a| a as u64).unwrap_or(address);
            }
            ids.push(b.location(address, lines));
        }
        let n = *n as i64;
        b.profile.sample.push(Sample {
            location_id: ids,
            value: vec![n, n * period],
        });
    }
    b.profile
}
