"""The page `seglab serve` shows at /: one self-contained HTML file (no CDN, no external file),
so that it works offline. It uploads an image to /predict, draws the image with the mask over it
on a canvas (a slice slider for volumes, opacity, class colours and names), toggles the Grad-CAM
and uncertainty maps, lists the measurements and offers the mask as a file in the input's own
format."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seglab</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:70em;color:#222}
fieldset{border:1px solid #ccc;margin:0 0 1em;padding:.6em 1em}
canvas{image-rendering:pixelated;border:1px solid #ccc;max-width:100%}
table{border-collapse:collapse;font-size:.85em;margin-top:1em}
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:right}
.swatch{display:inline-block;width:1em;height:1em;margin:0 .3em 0 1em;vertical-align:middle}
#error{color:#b00;font-weight:bold}
</style></head><body>
<h1>seglab</h1><p id="model">loading the model's description...</p>
<fieldset><legend>Image</legend>
<input type="file" id="file"> <label><input type="checkbox" id="explain"> Grad-CAM</label>
<label><input type="checkbox" id="uncertainty"> uncertainty</label>
<label>token <input type="password" id="token" size="12"></label>
<button id="go">Segment</button> <span id="status"></span><div id="error"></div></fieldset>
<fieldset id="view" hidden><legend>View</legend>
<label>overlay <select id="layer"><option value="mask">mask</option></select></label>
<label>opacity <input type="range" id="opacity" min="0" max="100" value="50"></label>
<label id="slicebox">slice <input type="range" id="slice" min="0" value="0">
<span id="sliceno"></span></label> <a id="download" href="#">download the mask</a>
<div id="legend"></div><canvas id="canvas"></canvas><div id="table"></div></fieldset>
<script>
const COLOURS=[[0,0,0],[230,25,75],[60,180,75],[255,225,25],[0,130,200],[245,130,48],
 [145,30,180],[70,240,240],[240,50,230],[210,245,60],[250,190,212],[0,128,128]];
let info=null,result=null;
const $=id=>document.getElementById(id);
function headers(){const t=$("token").value;return t?{Authorization:"Bearer "+t}:{};}
function decode(a){const raw=atob(a.data),bytes=new Uint8Array(raw.length);
 for(let i=0;i<raw.length;i++)bytes[i]=raw.charCodeAt(i);
 return a.dtype==="uint16"?new Uint16Array(bytes.buffer):bytes;}
function describe(){fetch("model",{headers:headers()}).then(r=>r.json().then(j=>{
 if(!r.ok)throw new Error(j.detail||r.statusText);info=j;
 $("model").textContent=`Run ${j.run}: ${j.model}, ${j.dims}D, ${j.in_channels} channel(s), `+
 `${j.task}; classes: ${j.classes.slice(1).join(", ")}`;})).catch(e=>$("model").textContent=
 "The model's description needs the token: "+e.message);}
function draw(){if(!result)return;const s=result.shape,three=s.length===3;
 const h=three?s[1]:s[0],w=three?s[2]:s[1],z=three?+$("slice").value:0,n=h*w,o=z*n;
 $("sliceno").textContent=three?`${z+1} / ${s[0]}`:"";const c=$("canvas");c.width=w;c.height=h;
 const ctx=c.getContext("2d"),img=ctx.createImageData(w,h),a=+$("opacity").value/100;
 const rgb=result.image.shape.length===s.length+1,layer=$("layer").value;
 for(let i=0;i<n;i++){let r,g,b;if(rgb){r=result.imagePix[3*(o+i)];g=result.imagePix[3*(o+i)+1];
  b=result.imagePix[3*(o+i)+2];}else{r=g=b=result.imagePix[o+i];}
  let col=null,alpha=a;if(layer==="mask"){const k=result.maskPix[o+i];
   if(k>0)col=COLOURS[info&&info.task==="instance"?1+(k%11):k%COLOURS.length];}
  else{const v=result.mapPix[layer][o+i]/255;col=[255*v,255*(1-Math.abs(2*v-1)),255*(1-v)];
   alpha=a*v;}
  if(col){r=(1-alpha)*r+alpha*col[0];g=(1-alpha)*g+alpha*col[1];b=(1-alpha)*b+alpha*col[2];}
  img.data.set([r,g,b,255],4*i);}
 ctx.putImageData(img,0,0);}
function legend(){if(!info||info.task==="instance"){$("legend").textContent=
 "each object in its own colour";return;}$("legend").innerHTML=info.classes.slice(1).map((c,k)=>
 `<span class="swatch" style="background:rgb(${COLOURS[(k+1)%COLOURS.length]})"></span>`+
 c.replace(/[<&]/g,"")).join("");}
function table(m){const rows=Array.isArray(m)?m:m.components;if(!rows.length){
 $("table").textContent="nothing found";return;}const keys=Object.keys(rows[0]);
 $("table").innerHTML="<table><tr>"+keys.map(k=>`<th>${k}</th>`).join("")+"</tr>"+
 rows.map(r=>"<tr>"+keys.map(k=>`<td>${String(r[k]).replace(/[<&]/g,"")}</td>`).join("")+
 "</tr>").join("")+"</table>";}
$("go").onclick=()=>{const f=$("file").files[0];if(!f){$("error").textContent="choose a file";
 return;}const form=new FormData();form.append("file",f);$("error").textContent="";
 $("status").textContent="segmenting...";
 fetch(`predict?explain=${$("explain").checked}&uncertainty=${$("uncertainty").checked}`,
  {method:"POST",body:form,headers:headers()}).then(r=>r.json().then(j=>{
  if(!r.ok)throw new Error(j.detail||r.statusText);result=j;
  j.imagePix=decode(j.image);j.maskPix=decode(j.mask);j.mapPix={};
  $("layer").innerHTML='<option value="mask">mask</option>';
  for(const k in j.maps){j.mapPix[k]=decode(j.maps[k]);
   $("layer").innerHTML+=`<option value="${k}">${k}</option>`;}
  $("slicebox").hidden=j.shape.length!==3;$("slice").max=j.shape[0]-1;
  $("slice").value=Math.floor(j.shape[0]/2);$("view").hidden=false;
  const d=$("download");d.download=j.download.name;
  d.href="data:application/octet-stream;base64,"+j.download.data;
  legend();table(j.measurements);draw();$("status").textContent="done";}))
 .catch(e=>{$("status").textContent="";$("error").textContent=e.message;});};
for(const id of ["opacity","slice","layer"])$(id).oninput=draw;
$("token").onchange=describe;describe();
</script></body></html>
"""
