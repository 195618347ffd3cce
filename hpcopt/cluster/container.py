"""Running a campaign's processes inside an Apptainer or Charliecloud image.

``slurm: {container: {runtime, image, binds, gpu}}`` makes every task of the allocation
start inside the image: submitit's launcher, hence the Ray head, the Ray workers and the
driver, which they start as child processes. :func:`launcher` gives the shell words that
replace ``python`` in the job script.

- ``bash -c 'exec apptainer exec [--nv] --bind DIR --bind "${TMPDIR:-/tmp}":/tmp ... IMAGE
  PYTHON "$@"' bash``:
  ``--nv`` brings the host's NVIDIA driver in; the campaign folder is bound at its own
  path and the node-local temporary folder at ``/tmp`` (Ray's sockets and spill files).
  The host environment passes through (Slurm's ``SLURM_*``, hpcopt's Ray address and
  token variables): ``--containall``/``--cleanenv`` would strip it, so they are not used.
- ``ch-run --set-env -b DIR ... IMAGE -- PYTHON``: Charliecloud shares the host's
  environment and binds the node's ``$TMPDIR`` (or ``/tmp``) at ``/tmp`` by default;
  ``--set-env`` adds the image's ``/ch/environment`` (the variables the stack needs). A
  bind's destination must exist in the image (Charliecloud does not create it in a
  read-only image): keep campaigns under ``/tmp`` or a folder the image has. GPUs need
  the image prepared with ``ch-fromhost --nvidia`` once per driver version.

``PYTHON`` is the image's interpreter (``/opt/hpcopt/venv/bin/python`` in the images that
``containers/`` builds).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from hpcopt.config.cluster import ContainerConfig

NODE_TMP = '"${TMPDIR:-/tmp}":/tmp'  # expanded on each node, not at submission


def launcher(container: ContainerConfig, campaign_dir: Path) -> str | None:
    """The shell words that start Python for a job of the campaign in ``campaign_dir``:
    ``None`` without a container (submitit then uses the submitting interpreter)."""
    if not container.enabled:
        return None
    q = shlex.quote
    image = q(str(Path(container.image).expanduser()))  # type: ignore[arg-type]
    binds = [str(campaign_dir), *container.binds]
    if container.runtime == "apptainer":
        words = ["apptainer", "exec"]
        if container.gpu:
            words.append("--nv")
        for bind in binds:
            words += ["--bind", q(bind)]
        words += ["--bind", NODE_TMP, *map(q, container.options), image, q(container.python)]
        # srun starts this on every node; bash -c makes each node expand its own $TMPDIR
        # (the job script would expand it once, on the first node); Python's arguments
        # follow as "$@"
        inner = " ".join(["exec", *words, '"$@"'])
        return f"bash -c {q(inner)} bash"
    # ch-run refuses to start without $USER, which a job submitted from cron may lack
    words = ['env USER="${USER:-$(id -un)}"', "ch-run", "--set-env"]
    for bind in binds:
        words += ["-b", q(bind)]
    words += [*map(q, container.options), image, "--", q(container.python)]
    return " ".join(words)
