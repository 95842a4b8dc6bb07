#!/usr/bin/env python3
"""Push and pull of a ~500 MB PEFT adapter over loopback, in one run, against the same servers:

  Hub: loratool push / pull  vs  huggingface_hub upload_folder / snapshot_download (Xet off),
       both against tests/hub_server/server.py (LFS uploads and downloads via its CDN origin)
  OCI: loratool push / pull  vs  skopeo copy (store layout -> registry, registry -> layout),
       both against Debian's docker-registry on 127.0.0.1

Each command runs under /usr/bin/time; the table gives wall time, throughput and peak RSS.
Needs: a release build (cargo build --release), python3 with numpy, safetensors and
huggingface_hub, docker-registry, skopeo. Usage: python3 benches/remote_transfer.py [--mb 500]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LORATOOL = os.path.join(ROOT, "target", "release", "loratool")
TOKEN = "hf_bench_token"


def make_adapter(path, mb):
    import numpy as np
    from safetensors.numpy import save_file

    rank, dim = 256, 4096
    per_module = 2 * rank * dim * 4
    n = max(1, (mb << 20) // per_module)
    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(n):
        layer, proj = divmod(i, 4)
        name = ["q_proj", "k_proj", "v_proj", "o_proj"][proj]
        base = f"base_model.model.model.layers.{layer}.self_attn.{name}"
        tensors[f"{base}.lora_A.weight"] = rng.standard_normal((rank, dim), dtype=np.float32)
        tensors[f"{base}.lora_B.weight"] = rng.standard_normal((dim, rank), dtype=np.float32)
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
    json.dump({"peft_type": "LORA", "r": rank, "lora_alpha": rank, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
               "base_model_name_or_path": "meta-llama/Llama-2-7b-hf", "task_type": "CAUSAL_LM"},
              open(os.path.join(path, "adapter_config.json"), "w"))
    return os.path.getsize(os.path.join(path, "adapter_model.safetensors"))


def timed(label, cmd, env, size, results):
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "__TIME__ %e %M"] + cmd, env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{label} failed:\n{p.stdout}\n{p.stderr}")
    line = [l for l in p.stderr.splitlines() if l.startswith("__TIME__")][-1]
    _, secs, rss_kb = line.split()
    secs = float(secs)
    results.append((label, secs, size / secs / 1e6, int(rss_kb) / 1024))
    print(f"{label:55s} {secs:7.2f} s {size / secs / 1e6:7.1f} MB/s {int(rss_kb) / 1024:8.1f} MiB",
          flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=500)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="remote-bench-")
    adapter = os.path.join(work, "adapter")
    size = make_adapter(adapter, args.mb)
    print(f"adapter: {size / 1e6:.1f} MB in {adapter}", flush=True)
    results = []

    hub = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/hub_server/server.py"), "--data",
                            os.path.join(work, "hubdata"), "--token", TOKEN],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    endpoint = json.loads(hub.stdout.readline().split(" ", 1)[1])["endpoint"]
    port = free_port()
    cfg = os.path.join(work, "registry.yml")
    open(cfg, "w").write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/regdata\nhttp:\n  addr: 127.0.0.1:{port}\n")
    reg = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        def env(name, **extra):
            e = dict(os.environ)
            e.update({"HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
                      "HF_HOME": os.path.join(work, name, "hf"), "LORATOOL_HOME": os.path.join(work, name, "store"),
                      "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
            e.update(extra)
            return e

        up = ("import sys\nfrom huggingface_hub import HfApi\napi=HfApi()\n"
              "api.create_repo(sys.argv[1], exist_ok=True)\napi.upload_folder(repo_id=sys.argv[1], folder_path=sys.argv[2])\n")
        down = "import sys\nfrom huggingface_hub import snapshot_download\nsnapshot_download(sys.argv[1])\n"
        timed("hub push: loratool push <dir> hf://bench/lt", [LORATOOL, "push", adapter, "hf://bench/lt", "--no-card"],
              env("a"), size, results)
        timed("hub push: huggingface_hub upload_folder", [sys.executable, "-c", up, "bench/py", adapter],
              env("b"), size, results)
        timed("hub pull: loratool pull hf://bench/py", [LORATOOL, "pull", "hf://bench/py"], env("c"), size, results)
        timed("hub pull: huggingface_hub snapshot_download", [sys.executable, "-c", down, "bench/lt"],
              env("d"), size, results)
        e = env("e")
        subprocess.run([LORATOOL, "add", adapter, "--name", "bench/a:v1"], env=e, check=True, capture_output=True)
        store = e["LORATOOL_HOME"]
        timed("oci push: loratool push bench/a:v1 oci://.../bench/lt:v1",
              [LORATOOL, "push", "bench/a:v1", f"oci://127.0.0.1:{port}/bench/lt:v1"], e, size, results)
        timed("oci push: skopeo copy oci:<store> docker://.../bench/sk:v1",
              ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{store}:bench/a:v1",
               f"docker://127.0.0.1:{port}/bench/sk:v1"], e, size, results)
        timed("oci pull: loratool pull oci://.../bench/sk:v1",
              [LORATOOL, "pull", f"oci://127.0.0.1:{port}/bench/sk:v1"], env("f"), size, results)
        timed("oci pull: skopeo copy docker://.../bench/lt:v1 oci:<dir>",
              ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://127.0.0.1:{port}/bench/lt:v1",
               f"oci:{work}/skopeo-layout:x"], e, size, results)
    finally:
        hub.stdin.close()
        hub.kill()
        reg.kill()
        subprocess.run(["rm", "-rf", work])
    print("\n| command | wall s | MB/s | peak RSS MiB |\n|---|---:|---:|---:|")
    for label, secs, mbs, rss in results:
        print(f"| {label} | {secs:.2f} | {mbs:.0f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
