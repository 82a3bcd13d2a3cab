package bench;

/** One system under test, reached through its own client library. */
interface Target extends AutoCloseable {
    /** Performs one write and returns once the system acknowledged it; throws on failure. */
    void write(int worker, byte[] payload, long timeoutMs) throws Exception;

    /** The member index (0..2) of the current leader, or -1 when none is known. */
    int leader() throws Exception;

    /** Whether member i is back in the group after a restart. */
    boolean rejoined(int member) throws Exception;

    String clientName();

    @Override
    void close();
}
