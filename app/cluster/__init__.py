"""Everything that talks to the Kubernetes API (the official, synchronous client), one job a module:

- `client`: configuration (kubeconfig or in-cluster), API clients, timeouts, error descriptions;
- `watch`: the one list+watch primitive (resume, 410 re-list, backoff, bookmarks, typed events);
- `configmaps`: the policy ConfigMap source, which feeds the `PolicyStore`;
- `namespaces`: the namespace cache the server consults per request;
- `events`: Warning Events (`PolicyRejected` on a broken ConfigMap key);
- `discovery`: the API server's version, for `sidecarMode: auto`;
- `cabundle`: `podgraft certs patch-ca-bundle`;
- `mode`: the wiring of all of it for `podgraft serve` in cluster mode.

Blocking calls run in daemon threads (one per watch) or worker threads, never on the event loop.
Local mode never imports this package.
"""
