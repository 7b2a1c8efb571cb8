// Package upstream compares the operator's local copies of upstream API types with the upstream Go types.
package upstream

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	ciliumupstream "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/anycast-operator/anycast-operator/internal/backend/cilium/ciliumv2"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// fill sets every field reachable from v to a non-zero value (one element in every list and map), so that a round
// trip exercises every field of a type.
func fill(v reflect.Value, depth int) {
	if depth > 12 {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.Type().Elem().Kind() == reflect.Struct && v.Type().Elem().Name() == "Time" {
			return // metav1.Time: its JSON form is not the point here
		}
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), depth+1)
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() || f.Name == "TypeMeta" || f.Name == "ObjectMeta" || f.Name == "ListMeta" || f.Type.Name() == "Time" {
				continue
			}
			fill(v.Field(i), depth+1)
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), depth+1)
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, depth+1)
		fill(e, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	}
}

// TestCiliumTypesRoundTrip: every field of each local cilium.io/v2 type exists in the upstream type under the same
// JSON name and type, and survives local → upstream → local unchanged.
func TestCiliumTypesRoundTrip(t *testing.T) {
	pairs := []struct {
		local, upstream runtime.Object
	}{
		{&ciliumv2.CiliumBGPClusterConfig{}, &ciliumupstream.CiliumBGPClusterConfig{}},
		{&ciliumv2.CiliumBGPPeerConfig{}, &ciliumupstream.CiliumBGPPeerConfig{}},
		{&ciliumv2.CiliumBGPAdvertisement{}, &ciliumupstream.CiliumBGPAdvertisement{}},
		{&ciliumv2.CiliumLoadBalancerIPPool{}, &ciliumupstream.CiliumLoadBalancerIPPool{}},
		{&ciliumv2.CiliumBGPNodeConfig{}, &ciliumupstream.CiliumBGPNodeConfig{}},
	}
	for _, p := range pairs {
		name := reflect.TypeOf(p.local).Elem().Name()
		t.Run(name, func(t *testing.T) {
			fill(reflect.ValueOf(p.local).Elem(), 0)
			b, err := json.Marshal(p.local)
			if err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(p.upstream); err != nil {
				t.Fatalf("the upstream %s does not take the local one: %v\n%s", name, err, b)
			}
			back, err := json.Marshal(p.upstream)
			if err != nil {
				t.Fatal(err)
			}
			again := reflect.New(reflect.TypeOf(p.local).Elem()).Interface()
			if err := json.Unmarshal(back, again); err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(p.local, again) {
				t.Errorf("%s changed on the round trip through the upstream type:\nlocal    %s\nupstream %s", name, b, back)
			}
		})
	}
}

// TestCiliumVersion: the CRDs the backend tests install are those of the Cilium these types are compared with.
func TestCiliumVersion(t *testing.T) {
	info, ok := moduleVersion("github.com/cilium/cilium")
	if !ok || info != testenv.CiliumVersion {
		t.Errorf("test/upstream compares with cilium %s, the backend tests install the CRDs of %s", info, testenv.CiliumVersion)
	}
}
