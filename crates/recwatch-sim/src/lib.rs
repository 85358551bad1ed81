//! A fake Huawei Cloud RTC API: `GET /v2/apps/{app_id}/individual-stream-jobs/{job_id}` and
//! its mix-stream twin, creating (`POST`) and stopping (`DELETE`) jobs of both kinds, with the
//! gateway's behaviour around it (AK/SK or token checks, AK lockout, the 1 s rate limit, per
//! account), a stand-in of the ECS metadata service handing out temporary keys,
//! scripted or controllable jobs, fault injection and request statistics. The demo, the
//! integration tests, the fault-injection tests and the benchmarks all run against it.
//!
//! # The script
//! With `scripted`, job `i` (id `job-{i:04}`, app `app_id`) is created when the simulator
//! starts and walks a fixed timeline, a pure function of `(i, elapsed, step)` ([`script_at`]):
//!
//! | `i % 6` | timeline |
//! |---|---|
//! | 0 | INIT -> RUNNING -> STOPPED `INTERNAL_ERROR` |
//! | 1 | INIT -> RUNNING -> STOPPED `EXCEED_MAX_IDLE_TIME` |
//! | 2 | INIT -> RUNNING -> STOPPED `TENANT_STOP` |
//! | 3 | INIT -> RUNNING, and stays RUNNING |
//! | 4 | INIT forever, with `max_idle_time` 5 (so a stuck-in-INIT rule can fire) |
//! | 5 | INIT -> RUNNING -> STOPPED with no `stop_reason` (`i / 6` even) or the unknown reason `RECORDER_CRASHED` (odd) |
//!
//! INIT lasts `step + offset`, RUNNING `2 * step`, where `offset = step * (i % 10) / 10`
//! staggers the jobs so their changes do not all land at once. `start_time` is when the job
//! went RUNNING, `stop_time` when it stopped, `update_time` the latest change. A job changed
//! through [`Simulator::set_job`] (or churn) or removed leaves its script at that moment.
//! Without `scripted` every job starts RUNNING and stays so until changed.
//!
//! [`Simulator::changes`] lists every state change with its time: the script's changes (the
//! initial INIT is the job's creation, not a change), every `set_job` and every churn step.
//!
//! # Creating, stopping and mix-stream jobs
//! `POST /v2/apps/{app_id}/individual-stream-jobs` (or `.../mix-stream-jobs`) with a body the
//! API would take (checked with the client's own `CreateRequest::parse`; 400 `RTC.00001002`
//! otherwise; the signature covers the body) answers 201 with a new job, `created-0001`
//! upwards, INIT for `step` and then RUNNING until changed; [`Simulator::created`] (`GET
//! /_sim/created`) lists each with the request it was made from. `DELETE` of a job answers 204
//! and the job goes STOPPED with `TENANT_STOP` (400 `RTC.00001009` when it had already
//! stopped). A mix-stream job (made by a create, or by [`Simulator::set_mix_job`]) is served
//! only on `.../mix-stream-jobs/{job_id}`, an individual one only on its own path; both are in
//! the job group's budget and counted in `requests` (and in `creates`, `created`, `stops`).
//! [`CreateFault`] rules (`POST /_sim/create-faults`, `--create-fault`) make the next creates
//! refused (400 `RTC.00001016`, the app deactivated), throttled (429), answered 500 after the
//! job was made, or stalled after it was made: see `create`.
//!
//! # Faults
//! A [`Fault`] rule applies to the next matching polls (one job or all, `remaining`
//! times or `until` a time, else for ever); the first matching rule wins. Faults come before
//! authentication and rate limiting, so a test gets exactly the answer it asked for.
//!
//! # Gateway checks, in order
//! The API lookup: any other path or method is 404 `APIG.0101` ("The API does not exist"), as
//! the real gateway answers before it looks at credentials. Then credentials, of the account
//! the request's access key names (see "Accounts"): a wrong or missing AK/SK signature (or an
//! `X-Sdk-Date` more than 15 minutes off the simulator's clock) or token is 401 `APIG.0301`,
//! and with AK/SK more than `lockout_after` such failures in a row lock that one key (and
//! that account, its temporary keys included) for `lockout`. A key no account has, a revoked
//! key and an expired temporary key are 401 `APIG.0301` too, with no step towards any lock.
//! With AK/SK, `X-Project-Id` is mandatory, as the API document says: a correctly signed
//! request without one is 400 `RTC.00001001`, and one naming another project than the
//! account's `project_id` (when set) is 403 `APIG.0302`; neither counts towards the lockout,
//! since the signature was right. Then the account's rate limit (at most its `rate_limit`
//! admitted requests in any trailing second; refused requests do not use up the budget),
//! then the job lookup (404 `RTC.00001003`).
//!
//! # Accounts
//! Account #0, `default`, is `auth`, `project_id` and `rate_limit`; each
//! [`SimAccount`] in `accounts` is one more, AK/SK only, with its own project id, rate limit
//! (10/s, the real gateway's, unless set), lockout and counts (`SimStats::by_account`). A
//! request signed with an account's access key (or one of its temporary keys) is that
//! account's; any other request is `default`'s, checked as its `auth` says (so without
//! accounts the simulator behaves as it always did; a signature with an unknown key is
//! refused when `default` is AK/SK too). Jobs are shared: any account may poll, create or stop
//! any app's jobs (the real API scopes apps per project; the tests and the demo need each
//! account to see jobs, not to be kept from others'). [`Simulator::revoke_key`] and
//! [`Simulator::restore_key`] (`POST /_sim/accounts/{name}/revoke` and `.../restore`) take an
//! account's key away and give it back.
//!
//! # The ECS metadata stand-in
//! With `metadata`, the simulator also serves `PUT /meta-data/latest/api/token` and `GET
//! /openstack/latest/securitykey` on its listener ([`Simulator::metadata_url`]), handing out
//! temporary keys of one account that the gateway accepts, with their security token, until
//! they expire: see `metadata`.
//!
//! With a `clock_offset`, the simulator's clock (for `X-Sdk-Date` checks and the `Date`
//! header of every API answer) is that far from the machine's, like a gateway seen from a
//! host whose clock is wrong.
//!
//! # Control API
//! `GET /_sim/stats`, `POST /_sim/reset-stats`, `POST /_sim/faults` (a JSON [`Fault`]),
//! `DELETE /_sim/faults`, `PUT /_sim/jobs/{app_id}/{job_id}` (a JSON [`JobSnapshot`](recwatch_rtc::JobSnapshot)),
//! `PUT /_sim/raw-jobs/{app_id}/{job_id}` (any bytes, served as they are),
//! `DELETE /_sim/jobs/{app_id}/{job_id}`, `PUT /_sim/mix-jobs/{app_id}/{job_id}` (a mix-stream
//! job), `GET /_sim/created` ([`CreatedJob`]s), `POST`/`DELETE /_sim/create-faults` (a JSON
//! [`CreateFault`]), `GET /_sim/changes`, `GET /_sim/callbacks` (the
//! record callbacks sent, [`SentCallback`]), `GET /_sim/accounts` ([`AccountState`]s),
//! `POST /_sim/accounts/{name}/revoke` and `.../restore`, and `POST /_sim/metadata/fail`
//! (`{"times": N}`) mirror the [`Simulator`] methods for a simulator running as its own
//! process. They are neither counted, limited nor
//! authenticated.
//!
//! # Record callbacks
//! `GET`/`PUT /v2/apps/{app_id}/record-callback` keep each app's one callback URL as the real
//! API does (checked by the gateway like the job API, the PUT's signature over its body; in
//! the apps group, 60 requests per minute, apart from the job group's budget; no faults).
//! With a URL registered (or `callback_url` from the start), every change of one of the app's
//! jobs is POSTed there, signed with the registered key: see `callbacks` for which events,
//! the bounded queue and sender task, `callback_drop` and `callback_lag`.
//!
//! Connections are served with hyper directly rather than `axum::serve`, because
//! [`FaultKind::Reset`] must drop the connection without writing a response, which only the
//! code owning the connection can do.
//!
//! # Layout
//! One module per seam: `options` (what to serve, how strict), `script` (timelines, the record
//! a scripted job serves, churn), `simulator` (the state behind one lock, [`start`] and the
//! [`Simulator`] handle), `server` (connections, routes, one request's way from arrival to
//! answer), `accounts` (account #0 and the others, revoking a key), `gateway` (credentials,
//! the account a request is for, its AK lockout and rate limit), `metadata` (the ECS
//! metadata stand-in and its temporary keys), `faults` (rules and their
//! answers), `create` (creating and stopping jobs, and the faults on create), `stats`
//! (request counting), `control` (the `/_sim` API), `registration` (the
//! record-callback URL), `callbacks` (the events, their queue and sender), `cli`
//! (`recwatch simulate`). The HTTP-level tests are in `tests/http`.

mod accounts;
mod callbacks;
mod cli;
mod control;
mod create;
mod faults;
mod gateway;
mod metadata;
mod options;
mod registration;
mod response;
mod script;
mod server;
mod simulator;
mod stats;

pub use accounts::AccountState;
pub use callbacks::{CallbackStats, SentCallback, event_body, events_for};
pub use cli::{SimulateArgs, run};
pub use create::{CreateFault, CreateFaultKind, CreatedJob};
pub use faults::{Fault, FaultKind};
pub use metadata::MetadataStats;
pub use options::{
    ACCOUNT_RATE_LIMIT, DEFAULT_ACCOUNT, SimAccount, SimAuth, SimMetadata, SimOptions,
};
pub use script::{Change, Timeline, job_id, script_at, timeline};
pub use simulator::{Simulator, start};
pub use stats::{AccountStats, SimStats};
