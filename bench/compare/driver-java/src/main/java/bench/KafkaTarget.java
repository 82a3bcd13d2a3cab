package bench;

import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Kafka through kafka-clients: a producer with acks=all sending to a topic of one
 * partition, replication factor 3, min.insync.replicas=2; `flush.messages=1` on the
 * topic when flushEveryMessage. One partition so that "the leader" is one broker,
 * as in the other systems.
 */
final class KafkaTarget implements Target {
    private final Admin admin;
    private final KafkaProducer<byte[], byte[]> producer;
    private final String topic;

    KafkaTarget(String[] endpoints, String topic, boolean flushEveryMessage) throws Exception {
        this.topic = topic;
        String bootstrap = String.join(",", endpoints);
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        admin = Admin.create(ap);
        NewTopic nt = new NewTopic(topic, 1, (short) 3);
        Map<String, String> cfg = new java.util.HashMap<>();
        cfg.put("min.insync.replicas", "2");
        if (flushEveryMessage) {
            cfg.put("flush.messages", "1");
        }
        nt.configs(cfg);
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (true) {
            try {
                admin.createTopics(List.of(nt)).all().get(10, TimeUnit.SECONDS);
                break;
            } catch (ExecutionException e) {
                if (e.getCause() instanceof TopicExistsException) {
                    break;
                }
                if (System.nanoTime() > deadline) {
                    throw e;
                }
                Thread.sleep(500);
            }
        }
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        // Kafka 4 waits 5 ms by default to fill a batch; 0 sends at once, so the latency
        // measured is the system's, and batching still happens whenever requests are queued.
        pp.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        pp.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, Integer.toString(4 << 20));
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        producer = new KafkaProducer<>(pp);
    }

    @Override
    public String clientName() {
        return "org.apache.kafka:kafka-clients KafkaProducer (acks=all, linger.ms=0)";
    }

    @Override
    public void write(int worker, byte[] payload, long timeoutMs) throws Exception {
        producer.send(new ProducerRecord<>(topic, payload)).get(timeoutMs, TimeUnit.MILLISECONDS);
    }

    private TopicPartitionInfo partition() throws Exception {
        TopicDescription d = admin.describeTopics(Collections.singleton(topic)).allTopicNames()
                .get(2, TimeUnit.SECONDS).get(topic);
        return d.partitions().get(0);
    }

    /** The partition leader's node id minus one (node ids are 1..3). */
    @Override
    public int leader() throws Exception {
        Node l = partition().leader();
        return l == null || l.isEmpty() ? -1 : l.id() - 1;
    }

    /** Back in the in-sync replica set. */
    @Override
    public boolean rejoined(int member) throws Exception {
        for (Node n : partition().isr()) {
            if (n.id() == member + 1) {
                return true;
            }
        }
        return false;
    }

    @Override
    public void close() {
        producer.close(java.time.Duration.ofSeconds(2));
        admin.close(java.time.Duration.ofSeconds(2));
    }
}
