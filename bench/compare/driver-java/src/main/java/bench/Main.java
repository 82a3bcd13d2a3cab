package bench;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Load driver of the comparison for DLedger and Kafka, with the same workload as
 * driver-go: N writes kept outstanding (one thread per slot, each issuing its next
 * write once the previous one is acknowledged), a warm-up, then a measured period.
 *
 * <pre>
 * driver-java bench    --system dledger|kafka --endpoints a,b,c --payload 1024 --inflight 64 ...
 * driver-java failover --system dledger|kafka --endpoints a,b,c --kills 10 --hook "cmd args"
 * driver-java ping     --system dledger|kafka --endpoints a,b,c
 * </pre>
 *
 * Results are JSON lines on stdout; diagnostics go to stderr.
 */
public final class Main {
    private Main() {}

    public static void main(String[] argv) throws Exception {
        if (argv.length < 1) {
            die("usage: driver-java bench|failover|ping --system dledger|kafka --endpoints a,b,c [flags]");
        }
        String mode = argv[0];
        Map<String, String> a = new HashMap<>();
        for (int i = 1; i < argv.length; i++) {
            if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
                die("bad argument " + argv[i]);
            }
            a.put(argv[i].substring(2), argv[++i]);
        }
        String system = a.getOrDefault("system", "");
        String[] endpoints = a.getOrDefault("endpoints", "").split(",");
        if (endpoints.length != 3) {
            die("need three endpoints");
        }
        Target t;
        switch (system) {
            case "dledger": t = new DLedgerTarget(endpoints); break;
            case "kafka": t = new KafkaTarget(endpoints, a.getOrDefault("topic", "bench"),
                    Boolean.parseBoolean(a.getOrDefault("flush-every-message", "false"))); break;
            default: die("unknown system " + system); return;
        }
        int code = 0;
        try {
            switch (mode) {
                case "ping": code = ping(t, system); break;
                case "bench":
                    System.out.println(bench(t, system, a.getOrDefault("version", ""),
                            a.getOrDefault("durability", ""),
                            Integer.parseInt(a.getOrDefault("payload", "1024")),
                            Integer.parseInt(a.getOrDefault("inflight", "1")),
                            Double.parseDouble(a.getOrDefault("warmup-s", "5")),
                            Double.parseDouble(a.getOrDefault("duration-s", "10"))));
                    break;
                case "failover":
                    code = Failover.run(t, system, a.getOrDefault("version", ""), a.getOrDefault("durability", ""),
                            Integer.parseInt(a.getOrDefault("kills", "10")),
                            Integer.parseInt(a.getOrDefault("interval-ms", "10")),
                            a.getOrDefault("hook", "").trim().split("\\s+"));
                    break;
                default: die("unknown mode " + mode);
            }
        } finally {
            t.close();
        }
        System.out.flush();
        // Client libraries leave non-daemon threads behind; the result is printed.
        Runtime.getRuntime().halt(code);
    }

    static int ping(Target t, String system) throws InterruptedException {
        long deadline = System.nanoTime() + 30_000_000_000L;
        Exception last = null;
        while (System.nanoTime() < deadline) {
            try {
                t.write(0, "ping".getBytes(), 2000);
                System.err.println(system + ": write ok");
                return 0;
            } catch (Exception e) {
                last = e;
                Thread.sleep(200);
            }
        }
        System.err.println(system + ": no write succeeded within 30 s: " + last);
        return 1;
    }

    static String bench(Target t, String system, String version, String durability, int payloadBytes,
                        int inFlight, double warmupS, double durationS) throws InterruptedException {
        byte[] payload = new byte[payloadBytes];
        for (int i = 0; i < payload.length; i++) {
            payload[i] = (byte) ('a' + i % 26);
        }
        long start = System.nanoTime();
        long measureFrom = start + (long) (warmupS * 1e9);
        long end = measureFrom + (long) (durationS * 1e9);
        long[][] samples = new long[inFlight][];
        int[] counts = new int[inFlight];
        AtomicLong errors = new AtomicLong();
        Thread[] threads = new Thread[inFlight];
        for (int w = 0; w < inFlight; w++) {
            final int worker = w;
            threads[w] = new Thread(() -> {
                long[] local = new long[1 << 14];
                int n = 0;
                while (true) {
                    long t0 = System.nanoTime();
                    if (t0 >= end) {
                        break;
                    }
                    boolean ok = true;
                    try {
                        t.write(worker, payload, 10_000);
                    } catch (Exception e) {
                        ok = false;
                    }
                    long t1 = System.nanoTime();
                    if (t0 < measureFrom || t1 > end) {
                        continue;
                    }
                    if (!ok) {
                        errors.incrementAndGet();
                        continue;
                    }
                    if (n == local.length) {
                        local = Arrays.copyOf(local, n * 2);
                    }
                    local[n++] = t1 - t0;
                }
                samples[worker] = local;
                counts[worker] = n;
            });
            threads[w].start();
        }
        for (Thread th : threads) {
            th.join();
        }
        int total = 0;
        for (int c : counts) {
            total += c;
        }
        long[] all = new long[total];
        int off = 0;
        for (int w = 0; w < inFlight; w++) {
            System.arraycopy(samples[w], 0, all, off, counts[w]);
            off += counts[w];
        }
        Arrays.sort(all);
        return String.format(java.util.Locale.ROOT,
                "{\"system\":\"%s\",\"version\":\"%s\",\"durability\":\"%s\",\"client\":\"%s\","
                        + "\"payload_bytes\":%d,\"in_flight\":%d,\"duration_s\":%s,\"ops\":%d,"
                        + "\"throughput_ops\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"errors\":%d}",
                system, version, durability, t.clientName(), payloadBytes, inFlight, durationS, total,
                total / durationS, pct(all, 0.50), pct(all, 0.99), pct(all, 0.999), errors.get());
    }

    /** Nearest-rank percentile, in milliseconds, of sorted nanosecond samples. */
    static double pct(long[] sorted, double q) {
        if (sorted.length == 0) {
            return 0;
        }
        int rank = Math.max(0, (int) Math.ceil(q * sorted.length) - 1);
        return sorted[rank] / 1e6;
    }

    static void die(String msg) {
        System.err.println("driver-java: " + msg);
        System.exit(2);
    }

    static List<String> list(String... s) {
        return new ArrayList<>(Arrays.asList(s));
    }
}
