"""The local Azure ML service: the real azureml-core (SDK v1) talks to amlocal over Azure's wire.

A new front door to the same run history and local backend, not a second engine (issue 12).
Laid out as the cloud emulators are (moto, Azurite): one module per Azure service family, each
with its routes and its wire shapes, reading and changing state only through amlocal's own parts
(`amlocal.backends.local.LocalBackend` and its run handles, the run history's `RunStore`, the
compute targets); `errors.py` renders Azure's error bodies, `tokens.py` issues and checks the
bearer tokens, `config.py` is the workspace config a running emulator leaves for clients, `app.py`
puts the families together and `server.py` runs it (`amlocal serve`).

    workspace.py    ARM workspace GET, discovery
    experiments.py  history: experiments get / create / list
    compute.py      ARM and data-plane compute: get, create (provisioning), list, delete, status
    history.py      history: runs get / patch / details / list / children / cancel / token
    metrics.py      metric v2.0: batch ingest with Azure's rules, read back; ingest wait
    artifacts.py    artifact v2.0: list, content info, download through signed content URLs,
                    uploads (SAS URIs whose blob PUT lands in the run's files)
    blobs.py        the blob store and Azure Blob's wire (put, blocks, get, head, list; SAS)
    snapshots.py    content v1.0/v2.0: latest, getblob, create; materialize into a folder
    datastores.py   datastore v1.0: the default blob datastore (workspaceblobstore)
    tls.py          the per-home CA and the blob host's certificate; the client CA bundle
    proxy.py        the https route: CONNECT to the blob host only, TLS ended here

    execution.py    execution: start run (snapshotrun, startrun with a project zip) on the local backend
    environments.py a run definition's environment as a local image
    models.py       model management over amlocal's model registry
    events.py       run events (start, complete, fail, cancel); children.py child and interactive runs
    mlflow.py       MLflow's tracking REST API over the same runs (log metrics, params, tags; get;
                    update); mlflow_search.py search runs, experiments; mlflow_artifacts.py
                    MLflow's proxied artifacts as run files
    server.py       `amlocal serve`: the app and the blob route's proxy on one event loop

Every other operation answers 501, naming its method and path.
"""
