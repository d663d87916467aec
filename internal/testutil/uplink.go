package testutil

import "fmt"

// UplinkConfig is an edged config for tests of the uplink to a cloud broker: gateway
// gatewayID, an MQTT listener on broker, and one mqtt connector "cloud" to cloudURL that
// retries fast (backoff 20ms to 200ms, no breaker) and forwards sensors/# at QoS 1 to
// {gateway_id}/{topic}. connector holds more keys of the connector, each line indented by
// six spaces ("      format: cbor\n"). The placeholders {data_dir} and {admin} are left for
// StartEdged.
func UplinkConfig(gatewayID, broker, cloudURL, connector string) string {
	return fmt.Sprintf(`data_dir: {data_dir}
gateway_id: %s
log: {level: info}
admin: {address: "{admin}"}
broker:
  listeners:
    - {type: tcp, address: %q}
bridge:
  connectors:
    - name: cloud
      type: mqtt
      url: %s
      backoff: {min: 20ms, max: 200ms}
      breaker: {failures: -1}
      forward:
        - {from: "sensors/#", to: "{gateway_id}/{topic}", qos: 1}
%s`, gatewayID, broker, cloudURL, connector)
}
