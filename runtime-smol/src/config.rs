//! Command line and YAML configuration, compatible with Slanger's flags and config keys.
//!
//! Command-line values win over the config file, which wins over the defaults.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crier_core::{AppConfig, ClusterConfig, Config};
use serde::Deserialize;

pub const HELP: &str = "\
crier: a Pusher Channels server

USAGE:
    crier -k APP_KEY -s SECRET [OPTIONS]

OPTIONS:
    -k, --app_key KEY            App key clients connect with (required, or app_key in the config file)
    -s, --secret SECRET          App secret that signs subscriptions and API requests (required,
                                 or secret in the config file)
        --app_id ID              App id expected in /apps/{id}/ API paths [default: any id]
    -C, --config_file PATH       YAML file with Slanger's keys; flags override it
    -w, --websocket_host H:P     WebSocket listen address [default: 0.0.0.0:8080]
    -a, --api_host H:P           HTTP API listen address [default: 0.0.0.0:4567]; when it equals
                                 the WebSocket address, one listener serves both
        --activity_timeout SECS  Seconds of silence before a client should ping, and before the
                                 server probes it [default: 120]
        --pong_timeout SECS      Seconds a probed client has to answer before it is closed with
                                 4201 [default: 30]
        --disable_client_events  Reject client- events [default: enabled]
        --max_connections N      Connections accepted at once, 4100 above it [default: 100000]
    -r, --redis_address URL      Join the cluster of every node using this Redis, for example
                                 redis://127.0.0.1:6379/0 [default: single node, state in memory]
        --node_timeout SECS      Seconds without heartbeats after which another cluster node
                                 counts as dead and its presence members are removed [default: 15]
        --pid_file PATH          Write the process id to PATH
    -v, --verbose                Log every connection and client error (debug level);
                                 --no-verbose is accepted and changes nothing
    -V, --version                Print the version
    -h, --help                   Print this help

Not supported yet, rejected when given (also as config file keys):
    -b, --webhook_url, -c, --cert_file, -p, --private_key_file
Rejected because they load Ruby code (the config key require is ignored with a warning):
    -i, --require

Logging: RUST_LOG overrides the level (for example RUST_LOG=crier=trace).
";

/// Everything the daemon needs to start.
#[derive(Debug)]
pub struct Settings {
    pub core: Config,
    pub websocket_host: String,
    pub api_host: String,
    pub verbose: bool,
    pub pid_file: Option<PathBuf>,
    /// Redis URL of the cluster; `None` runs a single node.
    pub redis_address: Option<String>,
}

/// The reason the configuration cannot be used.
#[derive(Debug)]
pub enum SettingsError {
    /// Arguments could not be parsed.
    Arguments(pico_args::Error),
    /// Arguments left over that no flag takes.
    UnknownArguments(Vec<OsString>),
    /// A flag or key belongs to a feature that does not exist yet.
    Unsupported(&'static str),
    /// The config file could not be read.
    ReadFile(PathBuf, std::io::Error),
    /// The config file is not valid YAML with the expected keys.
    ParseFile(PathBuf, serde_norway::Error),
    /// A required value is missing.
    Missing(&'static str),
    /// A value is out of range or malformed.
    Invalid(&'static str, String),
    /// The core rejected the configuration.
    Core(crier_core::ConfigError),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Arguments(error) => write!(f, "invalid arguments: {error} (see --help)"),
            Self::UnknownArguments(rest) => write!(f, "unknown arguments: {rest:?} (see --help)"),
            Self::Unsupported(what) => write!(f, "{what} is not supported yet"),
            Self::ReadFile(path, error) => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            Self::ParseFile(path, error) => {
                write!(f, "invalid config file {}: {error}", path.display())
            }
            Self::Missing(what) => write!(f, "missing {what} (see --help)"),
            Self::Invalid(what @ ("websocket_host" | "api_host"), value) => write!(
                f,
                "invalid {what}: {value:?}, expected HOST:PORT such as 127.0.0.1:8080 \
                 (in the config file the host and port are separate keys)"
            ),
            Self::Invalid(what @ "redis_address", value) => write!(
                f,
                "invalid {what}: {value:?}, expected a URL such as redis://127.0.0.1:6379/0"
            ),
            Self::Invalid(what @ "node_timeout", value) => {
                write!(f, "invalid {what}: {value:?}, expected 3 to 3600 seconds")
            }
            Self::Invalid(what, value) => write!(f, "invalid {what}: {value:?}"),
            Self::Core(error) => write!(f, "invalid configuration: {error}"),
        }
    }
}

impl std::error::Error for SettingsError {}

/// Keys of a Slanger YAML config file, plus Crier's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    app_key: Option<String>,
    secret: Option<String>,
    app_id: Option<String>,
    api_host: Option<String>,
    #[serde(default, deserialize_with = "port")]
    api_port: Option<u16>,
    websocket_host: Option<String>,
    #[serde(default, deserialize_with = "port")]
    websocket_port: Option<u16>,
    activity_timeout: Option<u64>,
    pong_timeout: Option<u64>,
    node_timeout: Option<u64>,
    client_events: Option<bool>,
    max_connections: Option<usize>,
    debug: Option<bool>,
    pid_file: Option<PathBuf>,
    /// Slanger loads this Ruby file; it has no meaning here.
    require: Option<serde_norway::Value>,
    redis_address: Option<String>,
    webhook_url: Option<serde_norway::Value>,
    tls_options: Option<serde_norway::Value>,
}

impl FileConfig {
    /// Parses YAML text; an empty document is an empty config.
    pub fn parse(text: &str) -> Result<Self, serde_norway::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut value: serde_norway::Value = serde_norway::from_str(text)?;
        // Slanger's files are read by Ruby, where `:app_key:` names the same key.
        if let serde_norway::Value::Mapping(mapping) = &mut value {
            let entries = std::mem::take(mapping);
            for (key, entry) in entries {
                let key = match key {
                    serde_norway::Value::String(name) => match name.strip_prefix(':') {
                        Some(bare) => serde_norway::Value::String(bare.to_owned()),
                        None => serde_norway::Value::String(name),
                    },
                    other => other,
                };
                mapping.insert(key, entry);
            }
        }
        serde_norway::from_value(value)
    }
}

/// Reads a port given as a number or, as in Slanger's defaults, as a string.
fn port<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Option::<Port>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Port::Number(port)) => Ok(Some(port)),
        Some(Port::Text(text)) => text.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("invalid port {text:?}, expected 0 to 65535"))
        }),
    }
}

/// Parses the command line (without the program name) into settings.
pub fn parse_args(args: Vec<OsString>) -> Result<Option<Command>, SettingsError> {
    let mut args = pico_args::Arguments::from_vec(args);
    if args.contains(["-h", "--help"]) {
        return Ok(None);
    }
    if args.contains(["-V", "--version"]) {
        return Ok(Some(Command::Version));
    }
    for (short, long, what) in [
        ("-b", "--webhook_url", "--webhook_url (webhooks)"),
        ("-c", "--cert_file", "--cert_file (TLS)"),
        ("-p", "--private_key_file", "--private_key_file (TLS)"),
        ("-i", "--require", "--require (Ruby files)"),
    ] {
        if args.contains([short, long])
            || args
                .opt_value_from_str::<_, String>([short, long])?
                .is_some()
        {
            return Err(SettingsError::Unsupported(what));
        }
    }
    let flags = Flags {
        app_key: args.opt_value_from_str(["-k", "--app_key"])?,
        secret: args.opt_value_from_str(["-s", "--secret"])?,
        app_id: args.opt_value_from_str("--app_id")?,
        config_file: args.opt_value_from_str(["-C", "--config_file"])?,
        websocket_host: args.opt_value_from_str(["-w", "--websocket_host"])?,
        api_host: args.opt_value_from_str(["-a", "--api_host"])?,
        activity_timeout: args.opt_value_from_str("--activity_timeout")?,
        pong_timeout: args.opt_value_from_str("--pong_timeout")?,
        max_connections: args.opt_value_from_str("--max_connections")?,
        redis_address: args.opt_value_from_str(["-r", "--redis_address"])?,
        node_timeout: args.opt_value_from_str("--node_timeout")?,
        disable_client_events: args.contains("--disable_client_events"),
        pid_file: args.opt_value_from_str("--pid_file")?,
        verbose: args.contains(["-v", "--verbose"]),
    };
    // Slanger's `--[no-]verbose`: debug logging is off unless asked for.
    let _ = args.contains("--no-verbose");
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(SettingsError::UnknownArguments(rest));
    }
    let file = match &flags.config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| SettingsError::ReadFile(path.clone(), error))?;
            FileConfig::parse(&text)
                .map_err(|error| SettingsError::ParseFile(path.clone(), error))?
        }
        None => FileConfig::default(),
    };
    flags
        .merge(file)
        .map(|settings| Some(Command::Run(Box::new(settings))))
}

/// The action the command line requests.
#[derive(Debug)]
pub enum Command {
    Run(Box<Settings>),
    Version,
}

impl From<pico_args::Error> for SettingsError {
    fn from(error: pico_args::Error) -> Self {
        Self::Arguments(error)
    }
}

#[derive(Default)]
struct Flags {
    app_key: Option<String>,
    secret: Option<String>,
    app_id: Option<String>,
    config_file: Option<PathBuf>,
    websocket_host: Option<String>,
    api_host: Option<String>,
    activity_timeout: Option<u64>,
    pong_timeout: Option<u64>,
    max_connections: Option<usize>,
    redis_address: Option<String>,
    node_timeout: Option<u64>,
    disable_client_events: bool,
    pid_file: Option<PathBuf>,
    verbose: bool,
}

impl Flags {
    fn merge(self, file: FileConfig) -> Result<Settings, SettingsError> {
        if file.webhook_url.is_some() {
            return Err(SettingsError::Unsupported("webhook_url (webhooks)"));
        }
        if file.tls_options.is_some() {
            return Err(SettingsError::Unsupported("tls_options (TLS)"));
        }
        if file.require.is_some() {
            log::warn!("config key require is ignored: it loads Ruby code in Slanger");
        }
        let key = self
            .app_key
            .or(file.app_key)
            .ok_or(SettingsError::Missing("app key (-k)"))?;
        let secret = self
            .secret
            .or(file.secret)
            .ok_or(SettingsError::Missing("secret (-s)"))?;
        let mut app = AppConfig::new(key, secret);
        app.id = self.app_id.or(file.app_id);
        app.client_events = !self.disable_client_events && file.client_events.unwrap_or(true);

        let mut core = Config::new(app);
        let activity = self
            .activity_timeout
            .or(file.activity_timeout)
            .unwrap_or(120);
        core.activity_timeout = Duration::from_secs(activity);
        let pong = self.pong_timeout.or(file.pong_timeout).unwrap_or(30);
        core.pong_timeout = Duration::from_secs(pong);
        if let Some(max) = self.max_connections.or(file.max_connections) {
            core.limits.max_connections = max;
        }
        let redis_address = self.redis_address.or(file.redis_address);
        if redis_address.is_some() {
            let timeout = self.node_timeout.or(file.node_timeout).unwrap_or(15);
            if !(3..=3600).contains(&timeout) {
                return Err(SettingsError::Invalid("node_timeout", timeout.to_string()));
            }
            core.cluster = Some(ClusterConfig {
                node_timeout: Duration::from_secs(timeout),
                // Three heartbeats fit in the timeout, so one lost message kills no node.
                heartbeat_interval: Duration::from_secs(timeout) / 3,
                ..ClusterConfig::default()
            });
        }
        core.validate().map_err(SettingsError::Core)?;

        let websocket_host = self
            .websocket_host
            .unwrap_or_else(|| host_port(file.websocket_host, file.websocket_port, 8080));
        let api_host = self
            .api_host
            .unwrap_or_else(|| host_port(file.api_host, file.api_port, 4567));
        for (what, address) in [("websocket_host", &websocket_host), ("api_host", &api_host)] {
            if !is_host_port(address) {
                return Err(SettingsError::Invalid(what, address.clone()));
            }
        }
        if let Some(address) = &redis_address {
            redis::IntoConnectionInfo::into_connection_info(address.as_str())
                .map_err(|_| SettingsError::Invalid("redis_address", address.clone()))?;
        }
        Ok(Settings {
            core,
            websocket_host,
            api_host,
            verbose: self.verbose || file.debug.unwrap_or(false),
            pid_file: self.pid_file.or(file.pid_file),
            redis_address,
        })
    }
}

/// Checks the form `HOST:PORT`, where an IPv6 host is in brackets.
fn is_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty() && (!host.contains(':') || host.starts_with('['));
    host_ok && port.parse::<u16>().is_ok()
}

/// Builds settings from a YAML config file's text alone, as `-C FILE` with no other flags.
pub fn settings_from_file_text(text: &str) -> Result<Settings, SettingsError> {
    let file = FileConfig::parse(text)
        .map_err(|error| SettingsError::ParseFile(PathBuf::from("<text>"), error))?;
    Flags::default().merge(file)
}

/// Joins Slanger's separate host and port keys into `host:port`.
fn host_port(host: Option<String>, port: Option<u16>, default_port: u16) -> String {
    let host = host.unwrap_or_else(|| "0.0.0.0".to_owned());
    format!("{host}:{}", port.unwrap_or(default_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Settings>, SettingsError> {
        let command = parse_args(args.iter().map(OsString::from).collect())?;
        Ok(command.map(|command| match command {
            Command::Run(settings) => *settings,
            Command::Version => panic!("unexpected --version"),
        }))
    }

    #[test]
    fn flags_set_every_value() {
        let settings = parse(&[
            "-k",
            "key",
            "-s",
            "secret",
            "--app_id",
            "7",
            "-w",
            "127.0.0.1:1",
            "-a",
            "127.0.0.1:2",
            "--activity_timeout",
            "5",
            "--pong_timeout",
            "3",
            "--disable_client_events",
            "-v",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(settings.core.app.key, "key");
        assert_eq!(settings.core.app.secret.expose(), "secret");
        assert_eq!(settings.core.app.id.as_deref(), Some("7"));
        assert_eq!(settings.websocket_host, "127.0.0.1:1");
        assert_eq!(settings.api_host, "127.0.0.1:2");
        assert_eq!(settings.core.activity_timeout, Duration::from_secs(5));
        assert_eq!(settings.core.pong_timeout, Duration::from_secs(3));
        assert!(!settings.core.app.client_events);
        assert!(settings.verbose);
    }

    #[test]
    fn defaults_match_slanger() {
        let settings = parse(&["-k", "key", "-s", "secret"]).unwrap().unwrap();
        assert_eq!(settings.websocket_host, "0.0.0.0:8080");
        assert_eq!(settings.api_host, "0.0.0.0:4567");
        assert_eq!(settings.core.activity_timeout, Duration::from_secs(120));
        assert!(settings.core.app.client_events);
        assert_eq!(settings.core.app.id, None);
    }

    #[test]
    fn missing_and_unsupported_values_fail() {
        assert!(matches!(
            parse(&["-s", "secret"]),
            Err(SettingsError::Missing(_))
        ));
        assert!(matches!(
            parse(&["-k", "k", "-s", "s", "-b", "http://127.0.0.1/hook"]),
            Err(SettingsError::Unsupported(_))
        ));
        assert!(matches!(
            parse(&["-k", "k", "-s", "s", "--bogus"]),
            Err(SettingsError::UnknownArguments(_))
        ));
        assert!(matches!(
            parse(&["-k", "k", "-s", "s", "-w", "localhost"]),
            Err(SettingsError::Invalid("websocket_host", _))
        ));
        assert!(matches!(
            parse(&["-k", "k", "-s", "s", "--activity_timeout", "0"]),
            Err(SettingsError::Core(_))
        ));
    }

    #[test]
    fn yaml_file_uses_slanger_keys() {
        let file = FileConfig::parse(
            "app_key: fk\nsecret: fs\napi_host: 127.0.0.1\napi_port: 5000\n\
             websocket_host: 127.0.0.1\nwebsocket_port: 5001\nactivity_timeout: 60\ndebug: true\n",
        )
        .unwrap();
        let flags = Flags {
            app_key: Some("flag-key".into()),
            secret: None,
            app_id: None,
            config_file: None,
            websocket_host: None,
            api_host: None,
            activity_timeout: None,
            pong_timeout: None,
            max_connections: None,
            redis_address: None,
            node_timeout: None,
            disable_client_events: false,
            pid_file: None,
            verbose: false,
        };
        let settings = flags.merge(file).unwrap();
        assert_eq!(settings.core.app.key, "flag-key");
        assert_eq!(settings.core.app.secret.expose(), "fs");
        assert_eq!(settings.api_host, "127.0.0.1:5000");
        assert_eq!(settings.websocket_host, "127.0.0.1:5001");
        assert_eq!(settings.core.activity_timeout, Duration::from_secs(60));
        assert!(settings.verbose);
    }

    #[test]
    fn yaml_file_takes_ruby_keys_and_string_ports() {
        let file = FileConfig::parse(":app_key: rk\n:secret: rs\napi_port: \"5002\"\n").unwrap();
        assert_eq!(file.app_key.as_deref(), Some("rk"));
        assert_eq!(file.secret.as_deref(), Some("rs"));
        assert_eq!(file.api_port, Some(5002));
        assert!(FileConfig::parse("api_port: \"http\"\n").is_err());
    }

    #[test]
    fn host_port_form_is_checked() {
        assert!(is_host_port("127.0.0.1:8080"));
        assert!(is_host_port("localhost:0"));
        assert!(is_host_port("[::1]:8080"));
        assert!(!is_host_port("127.0.0.1"));
        assert!(!is_host_port("127.0.0.1:0:8080"));
        assert!(!is_host_port(":8080"));
        assert!(!is_host_port("127.0.0.1:99999"));
    }

    #[test]
    fn invalid_redis_address_fails() {
        assert!(matches!(
            parse(&["-k", "k", "-s", "s", "-r", "127.0.0.1:6379"]),
            Err(SettingsError::Invalid("redis_address", _))
        ));
    }

    #[test]
    fn yaml_file_rejects_unknown_keys() {
        assert!(FileConfig::parse("app_kee: x\n").is_err());
        assert!(FileConfig::parse("- a\n- b\n").is_err());
        assert!(FileConfig::parse("").is_ok());
    }
}
