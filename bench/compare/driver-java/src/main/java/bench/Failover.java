package bench;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Kills the leader `kills` times under one writer issuing one write per interval and
 * reports the time from each kill until the first write issued after the kill succeeds.
 * The hook is run as `hook kill i` and `hook start i`.
 */
final class Failover {
    private Failover() {}

    static int run(Target t, String system, String version, String durability, int kills, int intervalMs,
                   String[] hook) throws Exception {
        byte[] payload = new byte[128];
        for (int k = 1; k <= kills; k++) {
            int leader = -1;
            long deadline = System.nanoTime() + 60_000_000_000L;
            while (leader < 0 && System.nanoTime() < deadline) {
                try {
                    leader = t.leader();
                } catch (Exception e) {
                    leader = -1;
                }
                if (leader < 0) {
                    Thread.sleep(200);
                }
            }
            if (leader < 0) {
                System.err.println(system + ": kill " + k + ": no leader within 60 s");
                return 1;
            }
            for (int i = 0; i < 50; i++) {
                try {
                    t.write(0, payload, 2000);
                } catch (Exception e) {
                    // light load before the kill; failures here are not measured
                }
                Thread.sleep(intervalMs);
            }
            // The clock starts before the hook, which sends SIGKILL within a few
            // milliseconds (a shell's start-up): the gap errs long, never short.
            long killedAt = System.nanoTime();
            hook(hook, "kill", leader);
            long gapNs;
            while (true) {
                if (System.nanoTime() - killedAt > 120_000_000_000L) {
                    System.err.println(system + ": kill " + k + ": no successful write within 120 s");
                    return 1;
                }
                try {
                    t.write(0, payload, 1000);
                    gapNs = System.nanoTime() - killedAt;
                    break;
                } catch (Exception e) {
                    Thread.sleep(intervalMs);
                }
            }
            System.out.println(String.format(Locale.ROOT,
                    "{\"system\":\"%s\",\"version\":\"%s\",\"durability\":\"%s\",\"kill\":%d,\"member\":%d,\"gap_ms\":%.3f}",
                    system, version, durability, k, leader, gapNs / 1e6));
            System.out.flush();
            hook(hook, "start", leader);
            long rejoinDeadline = System.nanoTime() + 120_000_000_000L;
            while (true) {
                boolean ok;
                try {
                    ok = t.rejoined(leader);
                } catch (Exception e) {
                    ok = false;
                }
                if (ok) {
                    break;
                }
                if (System.nanoTime() > rejoinDeadline) {
                    System.err.println(system + ": kill " + k + ": member " + leader + " did not rejoin within 120 s");
                    return 1;
                }
                Thread.sleep(200);
            }
        }
        return 0;
    }

    private static void hook(String[] hook, String action, int member) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(hook));
        cmd.add(action);
        cmd.add(Integer.toString(member));
        Process p = new ProcessBuilder(cmd).redirectOutput(ProcessBuilder.Redirect.INHERIT)
                .redirectError(ProcessBuilder.Redirect.INHERIT).start();
        int rc = p.waitFor();
        if (rc != 0) {
            throw new IllegalStateException("hook " + String.join(" ", cmd) + " exited " + rc);
        }
    }
}
