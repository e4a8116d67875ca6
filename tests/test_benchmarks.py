from experiments.benchmark import main


def test_experts_benchmark_prints_a_table_with_both_variants(capsys):
    main(["experts", "--batch", "1", "--tokens", "8", "--min-time", "0.01"])
    out = capsys.readouterr().out
    assert "| cpu | float32 | per-expert loop |" in out and "| cpu | float32 | batched (bmm) |" in out


def test_step_benchmark_prints_all_four_variants(capsys):
    main(["step", "--batch", "1", "--resolution", "32", "--steps", "1"])
    out = capsys.readouterr().out
    for variant in ("mogle (cached)", "mogle (re-encode)", "plain condition", "no condition"):
        assert f"| {variant} |" in out


def test_the_flux_dev_part_of_the_step_benchmark_runs_on_the_cpu(capsys):
    main(["step", "--batch", "1", "--resolution", "32", "--steps", "1", "--flux-dev-on-cpu"])
    out = capsys.readouterr().out
    part = out[out.index("FLUX.1-dev structure") :]
    for variant in ("mogle (cached)", "plain condition", "no condition"):
        assert f"| {variant} |" in part
    assert "sampling, 2 steps, batch 1:" in part


def test_cache_benchmark_prints_estimate_and_written_bytes_with_and_without_text(capsys):
    main(["cache", "--faces", "2", "--resolution", "32"])
    out = capsys.readouterr().out
    assert "flux_dev_shaped at 32^2, bfloat16: 4 x 64 image tokens, T5 512 x 4096, CLIP 768" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith(("| yes |", "| no |"))]
    assert len(rows) == 2 and all(0.9 <= float(row[3]) <= 1.1 for row in rows)  # estimate / written
    assert "30000 faces x 10 captions" in out and "TB" in rows[0][5]


def test_synthetic_benchmark_prints_ms_per_face_for_each_size(capsys):
    main(["synthetic", "--faces", "2", "--sizes", "32,48"])
    rows = [
        line.split(" | ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| 32 ") or line.startswith("| 48 ")
    ]
    assert len(rows) == 2 and all(float(row[1]) > 0 for row in rows)


def test_sampling_benchmark_times_both_samplers_on_both_backbones_with_the_same_images(capsys):
    main(["sampling", "--repeats", "1", "--tiny-steps", "2", "--dev-steps", "1", "--dev-resolution", "64"])
    rows = [
        line.split(" | ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| tiny") or line.startswith("| FLUX")
    ]
    assert [row[0] for row in rows] == ["| tiny", "| FLUX.1-dev-shaped"]
    assert [row[3] for row in rows] == ["2 x 3", "1 x 1"]  # true CFG's three passes; guidance's one
    assert all(float(row[-1].strip(" |")) == 0 for row in rows)  # the same images


def test_workers_benchmark_times_one_process_against_concurrent_ones(capsys):
    main(["workers", "--workers", "2", "--steps", "1", "--batch", "2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1 x") or line.startswith("| 2 x")]
    assert len(rows) == 2 and rows[0].endswith("| 1.00x |")
    assert float(rows[1].split("|")[-2].strip().rstrip("x")) > 0
