import io.apicurio.registry.serde.SerdeConfig;
import io.apicurio.registry.serde.avro.AvroKafkaSerializer;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.Properties;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.avro.Conversions;
import org.apache.avro.LogicalTypes;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Sends bars to a topic with Apicurio's Avro serializer in Confluent's framing, the schema
 * being the one registered under the topic's subject (found, not registered).
 *
 * <p>java -cp CLASSPATH AvroProducer.java BOOTSTRAP REGISTRY_V2_URL TOPIC SCHEMA_FILE, with one
 * bar a line on stdin as flat JSON of strings and numbers (decimals as strings, the timestamp
 * as RFC 3339); a field left out or null is null.
 */
public class AvroProducer {
    private static final Pattern FIELD =
        Pattern.compile("\"([a-z0-9_]+)\":\\s*(null|\"((?:[^\"\\\\]|\\\\.)*)\"|-?[0-9.eE+-]+)");

    public static void main(String[] args) throws Exception {
        Schema schema = new Schema.Parser().parse(Files.readString(Path.of(args[3])));
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, AvroKafkaSerializer.class.getName());
        props.put(SerdeConfig.REGISTRY_URL, args[1]);
        props.put(SerdeConfig.AUTO_REGISTER_ARTIFACT, "false");
        props.put(SerdeConfig.FIND_LATEST_ARTIFACT, "true");
        props.put(SerdeConfig.ENABLE_CONFLUENT_ID_HANDLER, "true"); // zero byte, 4-byte id
        props.put(SerdeConfig.USE_ID, "contentId"); // the id the Confluent API gives
        props.put(SerdeConfig.ENABLE_HEADERS, "false"); // the id in the value, not in headers
        int sent = 0;
        try (KafkaProducer<String, GenericRecord> producer = new KafkaProducer<>(props);
             BufferedReader in = new BufferedReader(new InputStreamReader(System.in))) {
            for (String line; (line = in.readLine()) != null; ) {
                GenericRecord bar = record(schema, line);
                producer.send(new ProducerRecord<>(args[2], bar.get("symbol").toString(), bar)).get();
                sent++;
            }
        }
        System.out.println("sent " + sent);
    }

    static GenericRecord record(Schema schema, String json) {
        GenericData.Record record = new GenericData.Record(schema);
        Matcher m = FIELD.matcher(json);
        while (m.find()) {
            Schema.Field field = schema.getField(m.group(1));
            if (field == null || m.group(2).equals("null")) {
                continue;
            }
            String text = m.group(3) != null ? m.group(3) : m.group(2);
            record.put(field.name(), value(nonNull(field.schema()), text));
        }
        return record;
    }

    static Schema nonNull(Schema schema) {
        if (schema.getType() != Schema.Type.UNION) {
            return schema;
        }
        return schema.getTypes().stream().filter(s -> s.getType() != Schema.Type.NULL).findFirst().get();
    }

    static Object value(Schema schema, String text) {
        if (schema.getLogicalType() instanceof LogicalTypes.Decimal decimal) {
            BigDecimal exact = new BigDecimal(text).setScale(decimal.getScale());
            return new Conversions.DecimalConversion().toBytes(exact, schema, decimal);
        }
        if (schema.getLogicalType() instanceof LogicalTypes.TimestampMicros) {
            return ChronoUnit.MICROS.between(Instant.EPOCH, Instant.parse(text));
        }
        return switch (schema.getType()) {
            case LONG -> Long.parseLong(text);
            case INT -> Integer.parseInt(text);
            default -> text;
        };
    }
}
