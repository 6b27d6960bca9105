"""The machine a process runs on: which device, NVIDIA GPUs through NVML, CPU threads, the allocator.

    device   pick_device, bf16_is_fast, configure_threads, default_batch_size
    gpu      gpu_status and the default number of concurrent runs (NVML, no CUDA context)
    threads  ThreadGovernor: torch's thread count chosen by measured throughput
    load     busy_beside / busy_lately / process_age_s: how busy the machine is, from /proc
    memory   tune_for_training: keep freed memory in a training process
"""
