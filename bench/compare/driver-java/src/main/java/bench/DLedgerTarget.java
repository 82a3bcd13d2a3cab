package bench;

import io.openmessaging.storage.dledger.client.DLedgerClient;
import io.openmessaging.storage.dledger.client.DLedgerClientRpcNettyService;
import io.openmessaging.storage.dledger.protocol.AppendEntryResponse;
import io.openmessaging.storage.dledger.protocol.DLedgerResponseCode;
import io.openmessaging.storage.dledger.protocol.MetadataRequest;
import io.openmessaging.storage.dledger.protocol.MetadataResponse;
import java.util.concurrent.TimeUnit;

/** DLedger through its own client: DLedgerClient.append, which returns once the leader committed the entry. */
final class DLedgerTarget implements Target {
    static final String GROUP = "bench";
    private final DLedgerClient client;
    private final DLedgerClientRpcNettyService meta;

    DLedgerTarget(String[] endpoints) {
        StringBuilder peers = new StringBuilder();
        for (int i = 0; i < endpoints.length; i++) {
            if (i > 0) {
                peers.append(';');
            }
            peers.append('n').append(i).append('-').append(endpoints[i]);
        }
        client = new DLedgerClient(GROUP, peers.toString());
        client.startup();
        meta = new DLedgerClientRpcNettyService();
        meta.updatePeers(peers.toString());
        meta.startup();
    }

    @Override
    public String clientName() {
        return "io.openmessaging.storage:dledger DLedgerClient.append";
    }

    @Override
    public void write(int worker, byte[] payload, long timeoutMs) throws Exception {
        // DLedgerClient.append is synchronous with its own 3 s timeout; it retries once
        // through the new leader when the one it knew answers NOT_LEADER.
        AppendEntryResponse r = client.append(payload);
        if (r.getCode() != DLedgerResponseCode.SUCCESS.getCode()) {
            throw new IllegalStateException("append: code " + r.getCode());
        }
    }

    private MetadataResponse metadata(int member) throws Exception {
        MetadataRequest req = new MetadataRequest();
        req.setGroup(GROUP);
        req.setRemoteId("n" + member);
        return meta.metadata(req).get(1500, TimeUnit.MILLISECONDS);
    }

    /** The member that reports itself as leader. */
    @Override
    public int leader() throws Exception {
        for (int i = 0; i < 3; i++) {
            try {
                MetadataResponse r = metadata(i);
                if (r.getCode() == DLedgerResponseCode.SUCCESS.getCode() && ("n" + i).equals(r.getLeaderId())) {
                    return i;
                }
            } catch (Exception e) {
                // member down: ask the next one
            }
        }
        return -1;
    }

    @Override
    public boolean rejoined(int member) throws Exception {
        MetadataResponse r = metadata(member);
        return r.getCode() == DLedgerResponseCode.SUCCESS.getCode() && r.getLeaderId() != null;
    }

    @Override
    public void close() {
        client.shutdown();
        meta.shutdown();
    }
}
