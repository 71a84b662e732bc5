//! Builds: a Dockerfile's instructions over a build context, as Docker's
//! classic builder runs them (`docker build`, `POST /build`).
//!
//! - [`dockerfile`]: the parser: directives, continuations, the exec and
//!   shell forms, flags, `ENV`/`LABEL` pairs, variable substitution;
//!   errors name the line.
//! - [`ignore`]: `.dockerignore`, matched as Docker matches it.
//! - [`context`]: the sources of `COPY`, and the layers made of them.
//!
//! The builder itself runs in the daemon ([`crate::daemon::build`]): it
//! needs containers.
//!
//! Still to come (issue 10): the builder itself — each `RUN` in a
//! container of the engine, its upper directory committed as a layer;
//! `COPY`/`ADD` as layers made from the context; the metadata
//! instructions as config edits; multi-stage builds; the layer cache.

pub mod context;
pub mod dockerfile;
pub mod ignore;
